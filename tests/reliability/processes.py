"""The service as real OS processes (``dehaze serve``, ``dehaze api``, ``dehaze worker``) and Redis inspection.

The fault tests need processes they can SIGKILL or SIGTERM, and the memory checks need a process whose RSS is
the server's alone, so the helpers here start the console entry point (``python -m service.cli``) in a child
process with an environment built from ``DEHAZE_*`` settings: the tiny test model on CPU with one torch thread.
Output goes to a log file that the tests read to see what a process did (e.g. which jobs it reclaimed).

Each child leads a process group of its own (a new session), so that stopping it stops its descendants too: the
FADE pool's spawned processes and multiprocessing's resource tracker would otherwise outlive a SIGKILLed server,
each holding its memory, for the rest of the test session. ``signal`` still reaches the child alone (a SIGTERM
test wants the server's own orderly shutdown); ``close`` kills the whole group and waits until it is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.service.live_server import wait_until

__all__ = [
    "PREFIX",
    "REPO",
    "STREAM",
    "ServiceProcess",
    "assert_nothing_left",
    "child_pids",
    "group_pids",
    "held_job_ids",
    "leftover_keys",
    "pending_by_consumer",
    "process_alive",
    "rss_bytes",
    "service_env",
    "service_process",
    "start_workers",
    "wait_http_ready",
    "worker_alive",
    "worker_consumers",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PREFIX = "dehaze"
"""The default ``queue_name``: prefix of every Redis key of the service."""
STREAM = f"{PREFIX}:jobs"


def service_env(tiny_model: tuple[Path, Path], **settings: object) -> dict[str, str]:
    """This environment without any ``DEHAZE_*`` variable, plus the tiny model and ``settings`` as DEHAZE_<NAME>.

    The worker's own metrics server is off unless ``worker_metrics_port`` is given, so that several workers can
    run side by side.
    """
    weights, artifact = tiny_model
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEHAZE_")}
    values: dict[str, object] = {
        "weights": weights,
        "artifact": artifact,
        "device": "cpu",
        "torch_threads": 1,
        "tile_size": 128,
        "tile_overlap": 16,
        "worker_metrics_port": 0,
        "max_batch_size": 4,
        "log_level": "INFO",  # the tests read INFO lines of the logs (batches, reclaimed jobs)
        **settings,
    }
    env.update({f"DEHAZE_{name.upper()}": str(value) for name, value in values.items() if value is not None})
    return env


class ServiceProcess:
    """One child process running a ``dehaze`` subcommand (or another module's ``main``), logging to a file.

    The child leads its own process group, and ``close`` kills that whole group: no process it started survives.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path, module: str = "service.cli") -> None:
        """Start ``python -m module *args`` in the repository root with ``env``; output goes to ``log_path``."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: close() reaches the processes it starts
        )
        self.pgid = self.process.pid
        """The child's process group (its pid): the child and every process it starts, unless one leaves it."""

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the child has not exited."""
        return self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the child (not to its group: a SIGKILL leaves its pool behind until ``close``)."""
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """The exit status (negative: killed by that signal); raises subprocess.TimeoutExpired after ``timeout_s``."""
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        """Everything the child wrote so far (also after ``close``)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def close(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the child's whole process group (also when the child itself has exited) and close the log.

        Waits up to ``timeout_s`` for the child to be reaped and for every other member of the group to end;
        a survivor after that is logged (``group_pids`` tells a test which).
        """
        with contextlib.suppress(ProcessLookupError):  # nothing of the group left
            os.killpg(self.pgid, signal.SIGKILL)
        try:
            self.process.wait(timeout=timeout_s)
            deadline = time.monotonic() + timeout_s
            while (left := group_pids(self.pgid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if left:
                logger.warning("processes %s of group %d survived SIGKILL for %.0f s", left, self.pgid, timeout_s)
        finally:
            self._log.close()


@contextlib.contextmanager
def service_process(
    args: Sequence[str], env: dict[str, str], log_path: Path, module: str = "service.cli"
) -> Iterator[ServiceProcess]:
    """A ``ServiceProcess`` that is killed (if still running) when the block ends."""
    child = ServiceProcess(args, env, log_path, module)
    try:
        yield child
    finally:
        child.close()


@contextlib.contextmanager
def start_workers(
    count: int, env: dict[str, str], folder: Path, client: redis.Redis, module: str = "service.cli"
) -> Iterator[list[ServiceProcess]]:
    """``count`` worker processes (``python -m module worker``), each serving once its heartbeat is in Redis.

    They start together (their model loads overlap); all are killed when the block ends.
    """
    prefix = env.get("DEHAZE_QUEUE_NAME", "dehaze")
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(service_process(["worker"], env, folder / f"worker-{index}.log", module))
            for index in range(count)
        ]
        wait_until(lambda: all(worker_alive(client, prefix, child) for child in children), 120, "the workers")
        yield children


def wait_http_ready(url: str, child: ServiceProcess, timeout_s: float = 120.0) -> None:
    """Wait until ``url``/readyz answers 200; fail at once (with the child's log) if the child exits first."""

    def ready() -> bool:
        if not child.running():
            raise AssertionError(f"the service exited with {child.process.returncode}:\n{child.log()[-3000:]}")
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200

    wait_until(ready, timeout_s, f"{url}/readyz")


def worker_alive(client: redis.Redis, prefix: str, child: ServiceProcess) -> bool:
    """True once the worker process has loaded and warmed its model: its heartbeat key exists in Redis.

    Raises:
        AssertionError: when the worker process has exited (with its log).
    """
    if not child.running():
        raise AssertionError(f"the worker exited with {child.process.returncode}:\n{child.log()[-3000:]}")
    return bool(client.exists(f"{prefix}:worker:{socket.gethostname()}-{child.pid}"))


def worker_consumers(client: redis.Redis, prefix: str, child: ServiceProcess) -> list[str]:
    """Consumer names of ``child`` in the job stream's group (``host-pid-random``, see ``RedisStreamsQueue``)."""
    mine = f"{socket.gethostname()}-{child.pid}-"
    return [name for name in pending_by_consumer(client, prefix) if name.startswith(mine)]


def held_job_ids(client: redis.Redis, prefix: str, child: ServiceProcess) -> dict[str, str]:
    """Stream entry id -> job id of every job delivered to ``child`` and not yet acknowledged."""
    stream, held = f"{prefix}:jobs", {}
    for consumer in worker_consumers(client, prefix, child):
        entries: Any = client.xpending_range(stream, "workers", "-", "+", 1000, consumername=consumer)
        for entry in entries:
            entry_id = _text(entry["message_id"])
            rows: Any = client.xrange(stream, entry_id, entry_id)  # one row, or none if acknowledged meanwhile
            for _, fields in rows:
                held[entry_id] = _text(fields[b"id"])
    return held


def pending_by_consumer(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Jobs delivered and not yet acknowledged, per consumer of the ``workers`` group (empty without a group)."""
    try:
        summary: Any = client.xpending(f"{prefix}:jobs", "workers")
    except redis.ResponseError:  # no stream or no group yet
        return {}
    return {_text(entry["name"]): int(entry["pending"]) for entry in summary.get("consumers") or []}


def leftover_keys(client: redis.Redis, prefix: str) -> list[str]:
    """Keys of jobs (payloads, results, fallback answers, cancellation markers) still in Redis.

    Heartbeats and the stream are excluded.
    """
    kinds = ("payload", "result", "fallback", "cancelled")
    return sorted(_text(key) for kind in kinds for key in client.scan_iter(match=f"{prefix}:{kind}:*"))


def assert_nothing_left(client: redis.Redis, prefix: str = PREFIX) -> None:
    """No job waiting or pending, and no payload, result or cancellation key left behind.

    A result stored twice would stay here unconsumed, so this also shows that no job was answered twice.
    """
    assert client.xlen(f"{prefix}:jobs") == 0
    assert sum(pending_by_consumer(client, prefix).values()) == 0
    assert leftover_keys(client, prefix) == []


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that still run (zombies, which hold no memory, are not counted).

    Read from /proc (Linux), so members whose parent has died and which were re-parented are found too.
    """
    return sorted(pid for pid, _, group in _running_processes() if group == pgid)


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (from /proc, Linux)."""
    return any(running == pid for running, _, _ in _running_processes())


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` that still run (from /proc, Linux)."""
    return sorted(child for child, parent, _ in _running_processes() if parent == pid)


def _running_processes() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process on this machine that is not a zombie."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:  # ended meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after its last ")"
        state, parent, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if state not in ("Z", "X"):
            yield int(entry.name), int(parent), int(group)


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
