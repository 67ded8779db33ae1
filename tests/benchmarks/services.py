"""The real service for the benchmarks: server processes, an HTTP load generator, and Prometheus figures.

Servers run as child processes started the way an operator starts them (``python -m commands serve`` for the
embedded backend; a private ``redis-server`` plus ``api`` and N ``worker`` processes for Redis), configured only
through ``DEHAZE_*`` environment variables. Their output goes to log files whose tail is shown when a start fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Child, RedisServer, dehaze_argv, free_port, stop, wait_ready

__all__ = ["BACKENDS", "LoadResult", "ServiceProcesses", "metric_sums", "run_load", "running_service"]

BACKENDS = {"embedded": 0, "redis1": 1, "redis2": 2}
"""Backend name -> number of Redis workers (0: ``dehaze serve``, worker in the API process)."""
_STOP_TIMEOUT_S = 30.0


@dataclass
class ServiceProcesses:
    """The processes of one service deployment on this machine.

    Args:
        backend: ``embedded``, ``redis1`` or ``redis2``.
        env: ``DEHAZE_*`` settings common to every process.
        workdir: folder for logs and Redis.
        worker_threads: torch threads of each process that runs the model.
    """

    backend: str
    env: Mapping[str, str]
    workdir: Path
    worker_threads: int
    url: str = ""
    api: Child | None = None
    workers: list[Child] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)
    redis: RedisServer | None = None

    def start(self, timeout_s: float) -> None:
        """Start every process and wait until ``/readyz`` says ready with all workers alive."""
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choices: {', '.join(BACKENDS)}")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        base = {**os.environ, **self.env, "DEHAZE_PORT": str(port), "DEHAZE_TORCH_THREADS": str(self.worker_threads)}
        workers = BACKENDS[self.backend]
        if workers == 0:
            self.api = self._spawn("serve", base)
            self.metrics_urls = [f"{self.url}/metrics"]
        else:
            self.redis = RedisServer(free_port(), self.workdir)
            self.redis.start()
            base["DEHAZE_REDIS_URL"] = self.redis.url
            self.api = self._spawn("api", base)
            for index in range(workers):
                metrics_port = free_port()
                self.workers.append(
                    self._spawn("worker", {**base, "DEHAZE_WORKER_METRICS_PORT": str(metrics_port)}, index)
                )
                self.metrics_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
        wait_ready(lambda: self._ready(max(1, workers)), timeout_s, f"{self.backend} to be ready", self.processes, 0.25)

    def _spawn(self, command: str, env: Mapping[str, str], index: int = 0) -> Child:
        """``dehaze COMMAND`` in the current folder (the benchmarks run from the repository root)."""
        argv = dehaze_argv("--log-level", "WARNING", command)
        return Child(argv, self.workdir / f"{command}-{index}.log", env, cwd=None)

    def _ready(self, workers: int) -> bool:
        response = httpx.get(f"{self.url}/readyz", timeout=5)
        return response.status_code == 200 and response.json().get("workers_alive", 0) >= workers

    @property
    def processes(self) -> list[Child]:
        """The API process (first) and the worker processes."""
        return ([self.api] if self.api is not None else []) + self.workers

    @property
    def model_pids(self) -> list[int]:
        """PIDs of the processes that run the model (the API process itself in embedded mode)."""
        return [p.pid for p in (self.workers or self.processes)]

    def log_tail(self) -> str:
        """The end of every process log."""
        return "\n".join(child.log_tail() for child in self.processes)

    def stop(self) -> None:
        """SIGTERM every process (workers first, so they drain), then kill what is left; stop Redis."""
        stop([*self.workers, *([self.api] if self.api is not None else [])], _STOP_TIMEOUT_S)
        if self.redis is not None:
            self.redis.stop()


@contextlib.contextmanager
def running_service(
    backend: str, env: Mapping[str, str], worker_threads: int, timeout_s: float = 600.0
) -> Iterator[ServiceProcesses]:
    """A started deployment of ``backend`` (stopped on exit), logging into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{backend}_") as tmp:
        service = ServiceProcesses(backend, env, Path(tmp), worker_threads)
        try:
            service.start(timeout_s)
            yield service
        finally:
            service.stop()


# -- load --------------------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    """What a load run measured: per-request latencies (successful requests) and statuses, wall time."""

    latencies_s: list[float]
    statuses: list[int]
    wall_s: float

    @property
    def ok(self) -> int:
        """Requests answered 200."""
        return sum(1 for s in self.statuses if s == 200)

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0


async def _client_loop(
    client: httpx.AsyncClient, url: str, files: dict[str, Any], tickets: list[int], result: LoadResult
) -> None:
    while tickets:
        tickets.pop()
        started = time.perf_counter()
        try:
            response = await client.post(url, files=files)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        if status == 200:
            result.latencies_s.append(time.perf_counter() - started)
        result.statuses.append(status)


async def _load(url: str, payload: bytes, filename: str, concurrency: int, total: int, timeout_s: float) -> LoadResult:
    result = LoadResult([], [], 0.0)
    tickets = list(range(total))
    files = {"image": (filename, payload, "application/octet-stream")}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(_client_loop(client, url, files, tickets, result) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - started
    return result


def run_load(
    url: str, payload: bytes, concurrency: int, total: int, filename: str = "image.png", timeout_s: float = 3600.0
) -> LoadResult:
    """``concurrency`` clients POST ``payload`` to ``url`` (closed loop) until ``total`` requests are answered."""
    if concurrency < 1 or total < 1:
        raise ValueError("concurrency and total must be >= 1")
    return asyncio.run(_load(url, payload, filename, concurrency, total, timeout_s))


# -- Prometheus figures ----------------------------------------------------------------------------------------------
def metric_sums(urls: list[str]) -> dict[str, float]:
    """Sample name -> value summed over label sets and over the given ``/metrics`` endpoints.

    E.g. ``dehaze_compute_seconds_sum``, ``dehaze_batch_size_count``; the request histogram is restricted to
    ``POST /dehaze`` answered 200, and ``dehaze_gpu_memory_bytes`` is kept per kind (``..._max_allocated``).
    """
    sums: dict[str, float] = {}
    for url in urls:
        text = httpx.get(url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name.startswith("dehaze_request_duration_seconds") and (
                    labels.get("route") != "/dehaze" or labels.get("status") != "200"
                ):
                    continue
                name = sample.name
                if name == "dehaze_gpu_memory_bytes":
                    name = f"{name}_{labels.get('kind')}"
                elif "le" in labels:
                    continue
                sums[name] = sums.get(name, 0.0) + float(sample.value)
    return sums


def metric_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """``after - before`` for every sample name in ``after``."""
    return {name: value - before.get(name, 0.0) for name, value in after.items()}
