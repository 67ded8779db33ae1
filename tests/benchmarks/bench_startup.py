"""Start-up of a worker and of an API replica on Redis: the figures behind the autoscaler's timings.

``python -m tests.benchmarks.bench_startup`` starts a private ``redis-server``, then, ``--rounds`` times, one
``dehaze worker`` process as a Kubernetes pod starts it (the artifact already exported, as the image does at build
time) and measures:

* **to metrics**: process start until its ``/metrics`` port answers (the port opens before the model loads);
* **to ready**: process start until its first heartbeat is in Redis, i.e. the model is loaded and warmed up and the
  worker takes jobs (``run_worker`` writes the heartbeat after the warm-up);
* **warm-up**: the worker's own log line (``warm-up of K shapes took N ms``);
* **idle stop**: SIGTERM until exit, with no job in hand (the drain of an idle worker);
* the CPU time the worker used until ready (user + system: what a start costs on a machine that is not shared,
  unlike the wall times, which CPU contention inflates);
* the worker's RSS once ready.

Then one ``dehaze api`` process, with a worker alive: start until ``/healthz`` answers (liveness) and until
``/readyz`` is 200 (FADE pool loaded), and the RSS of the API with its FADE process once ready.

These set the KEDA cool-down and the HPA scale-down window (a worker removed too early costs one start-up to get
back), the probes' initial delays and the pods' memory requests (deploy/k8s, docs/scaling.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.benchmarks.common import (
    Column,
    add_common_arguments,
    format_table,
    machine_info,
    print_targets,
    rss_bytes,
    setup_torch,
    target,
    write_report,
)
from tests.processes import Child, RedisServer, dehaze_argv, free_port, running, wait_ready

__all__ = ["main"]

logger = logging.getLogger(__name__)

_WARM_UP = re.compile(r"warm-up of \d+ shapes took (\d+) ms")
_POLL_S = 0.05


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *_children(int(child))]
    return found


def _tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and its descendants, in MiB (shared pages counted once per process)."""
    total = 0
    for member in [pid, *_children(pid)]:
        with contextlib.suppress(OSError, KeyError):
            total += rss_bytes(member)
    return total / 2**20


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/PID/stat), which CPU contention does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(condition: Callable[[], bool], child: Child, timeout_s: float) -> float:
    """Seconds until ``condition()`` holds, polled every 50 ms; raises with the log if the process exits first."""
    return wait_ready(condition, timeout_s, "the process to be ready", [child], interval_s=_POLL_S)


def _process(command: str, env: Mapping[str, str], log: Path) -> contextlib.AbstractContextManager[Child]:
    """``python -m commands COMMAND`` with ``env``, output to ``log``; killed at the end if still running."""
    return running(dehaze_argv(command), log, env, cwd=None, grace_s=0)


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _worker_round(env: dict[str, str], client: redis.Redis, folder: Path, index: int, timeout_s: float) -> dict:
    """One cold worker start: times to metrics and to ready, the logged warm-up, RSS, idle SIGTERM drain."""
    port = free_port()
    log = folder / f"worker-{index}.log"
    client.delete(*client.keys("dehaze:worker:*") or ["-"])
    with _process("worker", {**env, "DEHAZE_WORKER_METRICS_PORT": str(port)}, log) as worker:
        to_metrics = _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/metrics"), worker, timeout_s)
        to_ready = _wait(lambda: bool(client.keys("dehaze:worker:*")), worker, timeout_s)
        cpu_s = _cpu_seconds(worker.pid)
        rss = _tree_rss_mib(worker.pid)
        stopping = time.monotonic()
        worker.signal(signal.SIGTERM)
        status = worker.wait(timeout_s)
        stop_s = time.monotonic() - stopping
    found = _WARM_UP.search(log.read_text())
    return {
        "round": index,
        "to_metrics_s": to_metrics,
        "to_ready_s": to_ready,
        "cpu_s_to_ready": cpu_s,
        "warm_up_s": int(found[1]) / 1000.0 if found else None,
        "idle_stop_s": stop_s,
        "exit_status": status,
        "rss_mib": rss,
    }


def _api_start(env: dict[str, str], folder: Path, timeout_s: float) -> dict[str, Any]:
    """An API replica's start with one worker alive: to /healthz, to /readyz, and RSS with its FADE process."""
    port, metrics = free_port(), free_port()
    worker_log, api_log = folder / "worker-api.log", folder / "api.log"
    with _process("worker", {**env, "DEHAZE_WORKER_METRICS_PORT": str(metrics)}, worker_log) as worker:
        _wait(lambda: _http_ok(f"http://127.0.0.1:{metrics}/metrics"), worker, timeout_s)
        url = f"http://127.0.0.1:{port}"
        with _process("api", {**env, "DEHAZE_PORT": str(port)}, api_log) as api:
            to_health = _wait(lambda: _http_ok(f"{url}/healthz"), api, timeout_s)
            to_ready = _wait(lambda: _http_ok(f"{url}/readyz"), api, timeout_s)
            time.sleep(1.0)  # the FADE process has loaded its models by /readyz; let its RSS settle
            return {"to_healthz_s": to_health, "to_readyz_s": to_ready, "rss_mib": _tree_rss_mib(api.pid)}


def _artifact(weights: Path, folder: Path, device: str) -> tuple[Path, float | None]:
    """The TorchScript artifact the worker will serve for ``weights`` (its precision resolved as the worker resolves
    it; exported into ``folder`` if missing) and the export seconds."""
    from model.export import artifact_dtype
    from service.config import Settings
    from service.worker.runner import served_artifact

    artifact, dtype = served_artifact(Settings(weights=weights, device=device))
    if artifact.is_file() and artifact_dtype(artifact) == dtype:
        return artifact, None
    artifact = Settings(weights=weights, artifact=folder / f"{weights.stem}.ts.pt").artifact_path(dtype)
    started = time.monotonic()
    command = [sys.executable, "-m", "commands", "export", "--weights", str(weights), "--out", str(artifact)]
    subprocess.run([*command, "--dtype", dtype], check=True, capture_output=True)
    return artifact, time.monotonic() - started


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, "startup")
    parser.add_argument("--rounds", type=int, default=3, help="cold worker starts (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for one start (default 600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device = setup_torch(args.threads, args.device)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        folder = Path(tmp)
        artifact, export_s = _artifact(args.weights, folder, device.type)
        server = RedisServer(free_port(), folder)
        server.start()
        client = redis.Redis.from_url(server.url)
        env = {key: value for key, value in os.environ.items() if not key.startswith("DEHAZE_")}
        env.update(
            {
                "DEHAZE_REDIS_URL": server.url,
                "DEHAZE_WEIGHTS": str(args.weights),
                "DEHAZE_ARTIFACT": str(artifact),
                "DEHAZE_DEVICE": device.type,
                "DEHAZE_TORCH_THREADS": str(args.threads),
            }
        )
        try:
            rows = []
            for index in range(args.rounds):
                logger.info("worker start %d/%d", index + 1, args.rounds)
                rows.append(_worker_round(env, client, folder, index, args.timeout))
            logger.info("API start")
            api = _api_start(env, folder, args.timeout)
        finally:
            client.close()
            server.stop()
    columns = [
        Column("round", "round", "d"),
        Column("to_metrics_s", "to /metrics s", ".2f"),
        Column("to_ready_s", "to ready s", ".2f"),
        Column("cpu_s_to_ready", "CPU s to ready", ".2f"),
        Column("warm_up_s", "warm-up s", ".2f"),
        Column("idle_stop_s", "SIGTERM->exit s", ".2f"),
        Column("rss_mib", "RSS MiB", ".0f"),
    ]
    print(format_table(rows, columns, "Worker cold start (artifact exported beforehand)"))
    print(
        f"\nAPI: /healthz after {api['to_healthz_s']:.2f} s, /readyz after {api['to_readyz_s']:.2f} s, "
        f"RSS with its FADE process {api['rss_mib']:.0f} MiB"
    )
    summary = {
        key: _median(rows, key)
        for key in ("to_metrics_s", "to_ready_s", "cpu_s_to_ready", "warm_up_s", "idle_stop_s", "rss_mib")
    }
    targets = [target("worker exits 0 on SIGTERM", float(all(r["exit_status"] == 0 for r in rows)), ">=", 1.0)]
    print_targets(targets)
    write_report(
        args.out,
        "startup",
        machine_info(device, args.threads),
        {"weights": str(args.weights), "rounds": args.rounds, "export_s": export_s},
        {"workers": rows, "worker_median": summary, "api": api},
        targets,
        ["to ready = process start until the first heartbeat (model loaded and warmed up, taking jobs)"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
