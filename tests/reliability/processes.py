"""The service as real OS processes (``dehaze serve``, ``dehaze api``, ``dehaze worker``) and Redis inspection.

The fault tests need processes they can SIGKILL or SIGTERM, and the memory checks need a process whose RSS is
the server's alone, so the helpers here start the console entry point (``python -m commands``) in a child
process (``tests.processes.Child``) with an environment built from ``DEHAZE_*`` settings: the tiny test model on
CPU with one torch thread. Output goes to a log file that the tests read to see what a process did (e.g. which jobs
it reclaimed).

Each child leads a process group of its own, so that stopping it stops its descendants too (``Child.kill``).
``signal`` still reaches the child alone: a SIGTERM test wants the server's own orderly shutdown.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.processes import (
    REPO,
    Child,
    child_pids,
    dehaze_argv,
    env_without_dehaze,
    group_pids,
    process_alive,
    running,
    wait_ready,
)

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

PREFIX = "dehaze"
"""The default ``queue_name``: prefix of every Redis key of the service."""
STREAM = f"{PREFIX}:jobs"


def service_env(tiny_model: tuple[Path, Path], **settings: object) -> dict[str, str]:
    """This environment without any ``DEHAZE_*`` variable, plus the tiny model and ``settings`` as DEHAZE_<NAME>.

    The worker's own metrics server is off unless ``worker_metrics_port`` is given, so that several workers can
    run side by side.
    """
    weights, artifact = tiny_model
    env = env_without_dehaze()
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


ServiceProcess = Child
"""A child running a ``dehaze`` subcommand (or another module's ``main``); see ``service_process``."""


@contextlib.contextmanager
def service_process(
    args: Sequence[str], env: dict[str, str], log_path: Path, module: str = "commands"
) -> Iterator[Child]:
    """``python -m module *args`` in the repository root with ``env``, output to ``log_path``.

    The child leads its own process group; when the block ends that whole group is SIGKILLed (no SIGTERM first,
    as the fault tests stop a server), so no process it started survives.
    """
    with running(dehaze_argv(*args, module=module), log_path, env, own_group=True, grace_s=0) as child:
        yield child


@contextlib.contextmanager
def start_workers(
    count: int, env: dict[str, str], folder: Path, client: redis.Redis, module: str = "commands"
) -> Iterator[list[Child]]:
    """``count`` worker processes (``python -m module worker``), each serving once its heartbeat is in Redis.

    They start together (their model loads overlap); all are killed when the block ends.
    """
    prefix = env.get("DEHAZE_QUEUE_NAME", "dehaze")
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(service_process(["worker"], env, folder / f"worker-{index}.log", module))
            for index in range(count)
        ]
        wait_ready(lambda: all(worker_alive(client, prefix, child) for child in children), 120, "the workers", children)
        yield children


def wait_http_ready(url: str, child: Child, timeout_s: float = 120.0) -> None:
    """Wait until ``url``/readyz answers 200; fail at once (with the child's log) if the child exits first."""
    wait_ready(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, timeout_s, f"{url}/readyz", [child])


def worker_alive(client: redis.Redis, prefix: str, child: Child) -> bool:
    """True once the worker process has loaded and warmed its model: its heartbeat key exists in Redis."""
    return bool(client.exists(f"{prefix}:worker:{socket.gethostname()}-{child.pid}"))


def worker_consumers(client: redis.Redis, prefix: str, child: Child) -> list[str]:
    """Consumer names of ``child`` in the job stream's group (``host-pid-random``, see ``RedisStreamsQueue``)."""
    mine = f"{socket.gethostname()}-{child.pid}-"
    return [name for name in pending_by_consumer(client, prefix) if name.startswith(mine)]


def held_job_ids(client: redis.Redis, prefix: str, child: Child) -> dict[str, str]:
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


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
