"""Every Prometheus metric of the service, declared once, and the helpers that update them.

The names are part of the contract (the Grafana dashboard queries them); do not rename one without updating
``docker/grafana/dashboards/dehaze.json``. Metrics live in the process-wide default registry: the API serves
them on its own port, a Redis worker on ``worker_metrics_port``; in embedded mode one process exports both sides.

Bucket choice: on CPU one batch of the small model takes from tens of milliseconds (tiny images) to tens of
seconds (large tiled images), and a request can wait minutes in a long queue, so the second-based histograms are
log-spaced from 1 ms to 10 minutes (about three buckets per decade, fine enough for p50/p95/p99 estimates).
FADE is cheaper and capped in size (see ``service.density``), so its buckets stop at 30 s.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_SIZE",
    "CANCELLED_TILES",
    "COMPUTE_SECONDS",
    "DENSITY_SECONDS",
    "GPU_MEMORY_BYTES",
    "JOBS_TOTAL",
    "JOB_DURATION_SECONDS",
    "JOB_OUTCOMES",
    "MODEL_INFO",
    "QUEUE_DEPTH",
    "QUEUE_WAIT_SECONDS",
    "REQUESTS_TOTAL",
    "REQUEST_DURATION_SECONDS",
    "WORKERS_ALIVE",
    "observe_batch",
    "observe_density",
    "observe_request",
    "record_cancelled_tiles",
    "record_job",
    "set_gpu_memory",
    "set_model_info",
    "set_queue_depth",
    "set_workers_alive",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
DENSITY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
JOB_OUTCOMES: tuple[str, ...] = ("ok", "failed", "poisoned", "expired", "cancelled")
GPU_MEMORY_KINDS: tuple[str, ...] = ("allocated", "reserved", "max_allocated")

REQUEST_DURATION_SECONDS = Histogram(
    "dehaze_request_duration_seconds",
    "HTTP request latency by route template, method and status",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS_TOTAL = Counter(
    "dehaze_requests", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
QUEUE_WAIT_SECONDS = Histogram(
    "dehaze_queue_wait_seconds", "Time a job waited in the queue before its batch started", buckets=LATENCY_BUCKETS
)
COMPUTE_SECONDS = Histogram(
    "dehaze_compute_seconds", "Duration of one batch forward pass (one observation per batch)", buckets=LATENCY_BUCKETS
)
JOB_DURATION_SECONDS = Histogram(
    "dehaze_job_duration_seconds", "Worker side: job submission to result stored", buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("dehaze_batch_size", "Images or tiles in one forward pass", buckets=BATCH_BUCKETS)
QUEUE_DEPTH = Gauge("dehaze_queue_depth", "Jobs submitted and not yet finished")
JOBS_TOTAL = Counter("dehaze_jobs", "Finished jobs by outcome (ok, failed, poisoned, expired, cancelled)", ["outcome"])
CANCELLED_TILES = Counter(
    "dehaze_cancelled_tiles", "Tiles not computed because their job was cancelled or expired while it ran"
)
WORKERS_ALIVE = Gauge("dehaze_workers_alive", "Workers with a recent heartbeat")
GPU_MEMORY_BYTES = Gauge("dehaze_gpu_memory_bytes", "CUDA memory of the worker's device", ["kind"])
DENSITY_SECONDS = Histogram("dehaze_density_seconds", "Duration of one FADE computation", buckets=DENSITY_BUCKETS)
MODEL_INFO = Gauge(
    "dehaze_model_info", "The served model (value is always 1)", ["variant", "version", "device", "dtype"]
)

for _outcome in JOB_OUTCOMES:  # every outcome exists from the start, so rate() sees its first increment
    JOBS_TOTAL.labels(outcome=_outcome)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Record one finished HTTP request under its route template (never the raw path: bounded label values)."""
    labels = {"route": route, "method": method, "status": str(status)}
    REQUEST_DURATION_SECONDS.labels(**labels).observe(seconds)
    REQUESTS_TOTAL.labels(**labels).inc()


def observe_batch(size: int, wait_s: Sequence[float], compute_s: float) -> None:
    """Record one forward pass of a worker.

    Args:
        size: images or tiles in the forward pass.
        wait_s: the queue wait of each job in the batch (one observation per job).
        compute_s: the duration of the forward pass (one observation per batch).
    """
    BATCH_SIZE.observe(size)
    for wait in wait_s:
        QUEUE_WAIT_SECONDS.observe(max(0.0, wait))
    COMPUTE_SECONDS.observe(compute_s)


def record_job(outcome: str, duration_s: float | None = None) -> None:
    """Count one finished job; ``duration_s`` (submit to result) feeds the job-duration histogram.

    Raises:
        ValueError: for an outcome outside ``JOB_OUTCOMES`` (label values must stay bounded).
    """
    if outcome not in JOB_OUTCOMES:
        raise ValueError(f"unknown job outcome {outcome!r}; expected one of {JOB_OUTCOMES}")
    JOBS_TOTAL.labels(outcome=outcome).inc()
    if duration_s is not None:
        JOB_DURATION_SECONDS.observe(max(0.0, duration_s))


def record_cancelled_tiles(count: int) -> None:
    """Count tiles skipped because their job was cancelled (client gone) or expired while it was computed."""
    CANCELLED_TILES.inc(count)


def set_queue_depth(depth: int) -> None:
    """Jobs waiting plus in progress."""
    QUEUE_DEPTH.set(depth)


def set_workers_alive(count: int) -> None:
    """Workers whose heartbeat is recent."""
    WORKERS_ALIVE.set(count)


def set_gpu_memory(allocated: int, reserved: int, max_allocated: int) -> None:
    """CUDA memory in bytes (``torch.cuda.memory_allocated`` and friends); call only on a CUDA device."""
    for kind, value in zip(GPU_MEMORY_KINDS, (allocated, reserved, max_allocated), strict=True):
        GPU_MEMORY_BYTES.labels(kind=kind).set(value)


def set_model_info(variant: str, version: str, device: str, dtype: str) -> None:
    """Publish the served model; any previously published model is removed first."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(variant=variant, version=version, device=device, dtype=dtype).set(1)


def observe_density(seconds: float) -> None:
    """Record one FADE computation."""
    DENSITY_SECONDS.observe(seconds)
