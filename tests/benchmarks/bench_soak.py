"""Soak: N clients for a fixed time, then a burst beyond capacity; errors, memory, queue depth and refusals.

    python -m tests.benchmarks.bench_soak --duration 120 --concurrency 8 --out runs/benchmarks/soak.json

The service runs as real child processes (``services.running_service``: ``dehaze serve``, or a private
redis-server plus ``dehaze api`` and N ``dehaze worker``) whose queue holds ``--queue-limit`` jobs. Two phases:

``soak``: ``--concurrency`` closed-loop clients POST images to ``/dehaze`` for ``--duration`` seconds, after
    ``--warmup`` seconds of the same load that are not measured. The queue holds more jobs than there are clients,
    so every request must succeed. Every ``--sample-every`` seconds a sampler reads the RSS of every server process
    (children included) and the queue depth (``/readyz``). A worker's memory grows in steps of tens of MB while
    batches of each size first appear (allocator arenas, torch's buffers per shape), for up to about 40 s with two
    workers on a busy CPU, then stays flat; so memory counts as stable when the median RSS of the last third of the
    samples is within ``--rss-growth-mb`` of the median of the middle third. A leak keeps growing through both.
``burst``: ``--burst`` requests at the same moment, more than the queue holds. The excess must be refused with 503
    and ``Retry-After`` quickly: the p99 of the refusals must stay under ``--refusal-p99-ms`` and under half the
    median latency of the served requests (they did not wait in line).

``--tiny`` serves a random-initialised ``dcmpnet_tiny`` instead of ``--weights``: the service's own behaviour (errors,
memory, queue bounds) is what a soak measures, and the tiny network keeps a CPU-only run meaningful in minutes. The
process exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from model.export import ensure_artifact
from tests.benchmarks import common
from tests.benchmarks.services import BACKENDS, ServiceProcesses, running_service
from tests.service.live_server import image_bytes

__all__ = ["main", "parse_args"]

PAYLOADS = 8
"""Different images the clients cycle through (same size, different content)."""


@dataclass
class Phase:
    """What one phase observed: per request its status, latency and whether a 503 carried Retry-After."""

    statuses: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    retry_after: list[bool] = field(default_factory=list)
    wall_s: float = 0.0

    def record(self, response: httpx.Response | None, seconds: float) -> None:
        """One answer (None: the connection failed)."""
        self.statuses.append(0 if response is None else response.status_code)
        self.latencies_s.append(seconds)
        self.retry_after.append(response is not None and "retry-after" in response.headers)

    def latencies_of(self, status: int) -> list[float]:
        """Latencies of the answers with ``status``."""
        return [s for code, s in zip(self.statuses, self.latencies_s, strict=True) if code == status]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench_soak", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "soak")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="embedded", help="deployment (default embedded)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of the soak phase (default 120)")
    parser.add_argument("--warmup", type=float, default=30.0, help="unmeasured seconds of load first (default 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients of the soak phase (default 8)")
    parser.add_argument("--size", default="240x320", help="HxW of the uploaded images (default 240x320)")
    parser.add_argument("--queue-limit", type=int, default=16, help="DEHAZE_MAX_QUEUE_LENGTH (default 16)")
    parser.add_argument("--burst", type=int, default=64, help="simultaneous requests of the burst (default 64)")
    parser.add_argument("--sample-every", type=float, default=1.0, help="seconds between RSS/depth samples")
    parser.add_argument("--rss-growth-mb", type=float, default=64.0, help="allowed RSS growth in MB (default 64)")
    parser.add_argument("--refusal-p99-ms", type=float, default=1000.0, help="allowed p99 of the 503s (default 1000)")
    parser.add_argument("--tiny", action="store_true", help="serve a random-initialised dcmpnet_tiny")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds the service may take to start")
    args = parser.parse_args(argv)
    if args.concurrency >= args.queue_limit:
        parser.error("--concurrency must be below --queue-limit: the soak phase must never fill the queue")
    if args.burst <= args.queue_limit:
        parser.error("--burst must exceed --queue-limit: the burst phase must go beyond capacity")
    return args


# -- the service ---------------------------------------------------------------------------------------------------
def tiny_weights(folder: Path) -> Path:
    """A random-initialised ``dcmpnet_tiny`` checkpoint in ``folder``."""
    from model.checkpoint import save_checkpoint
    from model.pipeline import build_pipeline

    path = folder / "dcmpnet_tiny.pt"
    pipeline = build_pipeline("dcmpnet_tiny").eval()
    save_checkpoint(path, pipeline.phi, pipeline.psi, "dcmpnet_tiny", {"version": "soak-random-init"})
    return path


def service_env(weights: Path, artifact: Path, args: argparse.Namespace) -> dict[str, str]:
    """``DEHAZE_*`` settings of the deployment."""
    return {
        "DEHAZE_WEIGHTS": str(weights),
        "DEHAZE_ARTIFACT": str(artifact),
        "DEHAZE_DEVICE": args.device,
        "DEHAZE_HOST": "127.0.0.1",
        "DEHAZE_MAX_QUEUE_LENGTH": str(args.queue_limit),
        "DEHAZE_DENSITY_WORKERS": "1",
    }


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and of its children (0 when it is gone)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
        return common.rss_bytes(pid) + sum(tree_rss_bytes(int(child)) for child in children)
    except (OSError, KeyError):
        return 0


def process_names(service: ServiceProcesses) -> dict[str, int]:
    """``api`` (``serve`` when embedded) and ``worker<N>`` -> process id."""
    names = {("serve" if not service.workers else "api"): service.api.pid} if service.api is not None else {}
    return names | {f"worker{index}": worker.pid for index, worker in enumerate(service.workers)}


# -- the phases ----------------------------------------------------------------------------------------------------
async def _client(client: httpx.AsyncClient, url: str, payloads: list[bytes], deadline: float, phase: Phase) -> None:
    index = 0
    while time.monotonic() < deadline:
        files = {"image": ("soak.png", payloads[index % len(payloads)], "image/png")}
        index += 1
        started = time.perf_counter()
        try:
            response: httpx.Response | None = await client.post(url, files=files)
        except httpx.HTTPError:
            response = None
        phase.record(response, time.perf_counter() - started)


async def _sampler(
    client: httpx.AsyncClient, service: ServiceProcesses, every_s: float, stop: asyncio.Event
) -> list[dict[str, float]]:
    samples, started = [], time.monotonic()
    while not stop.is_set():
        depth = float("nan")
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            depth = float((await client.get(f"{service.url}/readyz")).json()["queue_depth"])
        by_process = {name: tree_rss_bytes(pid) / 1e6 for name, pid in process_names(service).items()}
        sample = {"t_s": time.monotonic() - started, "rss_mb": sum(by_process.values()), "queue_depth": depth}
        samples.append(sample | {f"rss_mb_{name}": mb for name, mb in by_process.items()})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return samples


async def soak(
    service: ServiceProcesses, payloads: list[bytes], args: argparse.Namespace
) -> tuple[Phase, list[dict[str, float]]]:
    """``--warmup`` then ``--duration`` seconds of ``--concurrency`` closed-loop clients; the sampler runs during the
    measured part only."""
    phase, stop = Phase(), asyncio.Event()
    limits = httpx.Limits(max_connections=args.concurrency + 1)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        url, warmup_end = f"{service.url}/dehaze", time.monotonic() + args.warmup
        await asyncio.gather(*(_client(client, url, payloads, warmup_end, Phase()) for _ in range(args.concurrency)))
        sampler = asyncio.create_task(_sampler(client, service, args.sample_every, stop))
        started = time.monotonic()
        deadline = started + args.duration
        await asyncio.gather(*(_client(client, url, payloads, deadline, phase) for _ in range(args.concurrency)))
        phase.wall_s = time.monotonic() - started
        stop.set()
        samples = await sampler
    return phase, samples


async def burst(service: ServiceProcesses, payloads: list[bytes], count: int) -> Phase:
    """``count`` requests sent at the same moment, each on its own connection."""
    phase = Phase()

    async def one(client: httpx.AsyncClient, index: int) -> None:
        files = {"image": ("burst.png", payloads[index % len(payloads)], "image/png")}
        started = time.perf_counter()
        try:
            response: httpx.Response | None = await client.post(f"{service.url}/dehaze", files=files)
        except httpx.HTTPError:
            response = None
        phase.record(response, time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=count)) as client:
        started = time.monotonic()
        await asyncio.gather(*(one(client, index) for index in range(count)))
        phase.wall_s = time.monotonic() - started
    return phase


# -- figures -------------------------------------------------------------------------------------------------------
def _percentiles(seconds: list[float]) -> dict[str, float | int] | None:
    return common.percentiles_ms(seconds) if seconds else None


def soak_results(phase: Phase, samples: list[dict[str, float]]) -> dict[str, Any]:
    """Counts, throughput, latency, and RSS and queue depth over time."""
    third = max(1, len(samples) // 3)
    rss = [sample["rss_mb"] for sample in samples]
    depths = [sample["queue_depth"] for sample in samples if not math.isnan(sample["queue_depth"])]
    ok = phase.statuses.count(200)
    return {
        "requests": len(phase.statuses),
        "ok": ok,
        "errors": len(phase.statuses) - ok,
        "statuses": dict(collections.Counter(phase.statuses)),
        "wall_s": phase.wall_s,
        "throughput_rps": ok / phase.wall_s if phase.wall_s else 0.0,
        "latency": _percentiles(phase.latencies_of(200)),
        "rss_mb": {
            "first": rss[0] if rss else None,
            "last": rss[-1] if rss else None,
            "max": max(rss, default=None),
            "growth": statistics.median(rss[-third:]) - statistics.median(rss[third:-third] or rss) if rss else None,
        },
        "queue_depth": {"max": max(depths, default=None), "mean": statistics.fmean(depths) if depths else None},
        "samples": samples,
    }


def burst_results(phase: Phase) -> dict[str, Any]:
    """Served, refused (and whether each refusal carried Retry-After), other answers, latencies."""
    refused = phase.latencies_of(503)
    with_retry = sum(flag for code, flag in zip(phase.statuses, phase.retry_after, strict=True) if code == 503)
    return {
        "requests": len(phase.statuses),
        "ok": phase.statuses.count(200),
        "refused": len(refused),
        "refused_with_retry_after": with_retry,
        "other": sum(code not in (200, 503) for code in phase.statuses),
        "statuses": dict(collections.Counter(phase.statuses)),
        "refusal_latency": _percentiles(refused),
        "served_latency": _percentiles(phase.latencies_of(200)),
    }


def targets_of(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The soak's pass/fail checks."""
    soaked, burst_ = results["soak"], results["burst"]
    refusal_p99 = (burst_["refusal_latency"] or {}).get("p99_ms")
    served_p50 = (burst_["served_latency"] or {}).get("p50_ms")
    ratio = refusal_p99 / served_p50 if refusal_p99 is not None and served_p50 else None
    return [
        common.target("soak: failed requests", soaked["errors"], "<=", 0),
        common.target(
            "soak: RSS growth, last third - middle third (MB)", soaked["rss_mb"]["growth"], "<=", args.rss_growth_mb
        ),
        common.target("soak: largest queue depth", soaked["queue_depth"]["max"], "<=", args.queue_limit),
        common.target("burst: requests refused with 503", burst_["refused"], ">=", 1),
        common.target(
            "burst: 503 without Retry-After", burst_["refused"] - burst_["refused_with_retry_after"], "<=", 0
        ),
        common.target("burst: answers other than 200 or 503", burst_["other"], "<=", 0),
        common.target("burst: p99 latency of the 503s (ms)", refusal_p99, "<=", args.refusal_p99_ms),
        common.target("burst: p99 of the 503s / p50 of the 200s", ratio, "<=", 0.5),
    ]


COLUMNS = [
    common.Column("phase", "phase"),
    common.Column("requests", "requests"),
    common.Column("ok", "200"),
    common.Column("refused", "503"),
    common.Column("errors", "other"),
    common.Column("throughput_rps", "req/s", ".2f"),
    common.Column("p50_ms", "p50 ms", ".0f"),
    common.Column("p99_ms", "p99 ms", ".0f"),
    common.Column("refusal_p99_ms", "503 p99 ms", ".0f"),
    common.Column("rss_first_mb", "RSS first MB", ".0f"),
    common.Column("rss_last_mb", "RSS last MB", ".0f"),
    common.Column("rss_growth_mb", "RSS growth MB", ".1f"),
    common.Column("depth_max", "max depth", ".0f"),
]


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per phase for the printed table."""
    soaked, burst_ = results["soak"], results["burst"]
    latency = soaked["latency"] or {}
    served = burst_["served_latency"] or {}
    return [
        {
            "phase": "soak",
            "requests": soaked["requests"],
            "ok": soaked["ok"],
            "refused": soaked["statuses"].get(503, 0),
            "errors": soaked["errors"] - soaked["statuses"].get(503, 0),
            "throughput_rps": soaked["throughput_rps"],
            "p50_ms": latency.get("p50_ms"),
            "p99_ms": latency.get("p99_ms"),
            "rss_first_mb": soaked["rss_mb"]["first"],
            "rss_last_mb": soaked["rss_mb"]["last"],
            "rss_growth_mb": soaked["rss_mb"]["growth"],
            "depth_max": soaked["queue_depth"]["max"],
        },
        {
            "phase": "burst",
            "requests": burst_["requests"],
            "ok": burst_["ok"],
            "refused": burst_["refused"],
            "errors": burst_["other"],
            "p50_ms": served.get("p50_ms"),
            "p99_ms": served.get("p99_ms"),
            "refusal_p99_ms": (burst_["refusal_latency"] or {}).get("p99_ms"),
        },
    ]


# -- main ----------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Start the deployment, warm it up, run both phases; returns the results."""
    height, width = common.parse_size(args.size) or (460, 620)
    payloads = [image_bytes(width, height, seed=seed) for seed in range(PAYLOADS)]
    weights = tiny_weights(folder) if args.tiny else Path(args.weights)
    artifact = ensure_artifact(weights, folder / f"{weights.stem}.ts.pt")
    env = service_env(weights, Path(artifact), args)
    with running_service(args.backend, env, args.threads, args.startup_timeout) as service:
        phase, samples = asyncio.run(soak(service, payloads, args))
        burst_phase = asyncio.run(burst(service, payloads, args.burst))
    return {"soak": soak_results(phase, samples), "burst": burst_results(burst_phase)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print the table and the targets, write the JSON; returns 1 when a target is missed."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    machine = common.machine_info(device, args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp:
        results = run(args, Path(tmp))
    print(common.format_table(table_rows(results), COLUMNS, title=f"soak ({args.backend}, {args.size}):"))
    targets = targets_of(results, args)
    common.print_targets(targets)
    config = {
        key: getattr(args, key)
        for key in ("backend", "warmup", "duration", "concurrency", "size", "queue_limit", "burst", "sample_every")
    }
    config["threads_per_model_process"] = args.threads
    config["weights"] = "dcmpnet_tiny (random init)" if args.tiny else str(args.weights)
    config["latency"] = "client wall time per request, send to last byte of the PNG response"
    common.write_report(args.out, "soak", machine, config, results, targets)
    print(f"wrote {args.out}")
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
