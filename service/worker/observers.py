"""The worker's metric hooks: the ``WorkerObserver`` protocol, one that records nothing and one that feeds Prometheus.

The worker loop reports what happened (a forward, a finished job, GPU memory, the served model, skipped tiles) and
never imports ``service.metrics`` itself, so tests and benchmarks run it with ``NullObserver`` or their own recorder,
and the embedded service wraps ``MetricsObserver`` to note the served model for ``/healthz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["MetricsObserver", "NullObserver", "WorkerObserver", "default_observer"]


class WorkerObserver(Protocol):
    """Hooks the worker calls for metrics (``MetricsObserver`` forwards them to ``service.metrics``)."""

    def batch(self, size: int, waits_s: Sequence[float], compute_s: float) -> None:
        """One forward of ``size`` items; ``waits_s`` are the queue waits of jobs starting with it."""

    def job(self, outcome: str, duration_s: float | None) -> None:
        """One finished job (ok, failed, poisoned, expired, cancelled) and its submit-to-result time."""

    def gpu_memory(self, stats: dict[str, int]) -> None:
        """CUDA memory figures after a batch."""

    def model_info(self, variant: str, version: str, device: str, dtype: str, licence: str) -> None:
        """The served model, once it is loaded; ``licence`` is the SPDX id of its weights' licence."""

    def cancelled_tiles(self, count: int) -> None:
        """Tiles not computed because their job was cancelled or expired while it ran."""


class NullObserver:
    """Records nothing."""

    def batch(self, size: int, waits_s: Sequence[float], compute_s: float) -> None:
        """Ignore."""

    def job(self, outcome: str, duration_s: float | None) -> None:
        """Ignore."""

    def gpu_memory(self, stats: dict[str, int]) -> None:
        """Ignore."""

    def model_info(self, variant: str, version: str, device: str, dtype: str, licence: str) -> None:
        """Ignore."""

    def cancelled_tiles(self, count: int) -> None:
        """Ignore."""


class MetricsObserver:
    """Forwards the hooks to the helpers of ``service.metrics`` (the Prometheus metrics of the contract)."""

    def __init__(self) -> None:
        from service import metrics  # imported when built: NullObserver users never load prometheus_client

        self._metrics = metrics

    def batch(self, size: int, waits_s: Sequence[float], compute_s: float) -> None:
        """dehaze_batch_size, dehaze_queue_wait_seconds (per job), dehaze_compute_seconds (per forward)."""
        self._metrics.observe_batch(size, waits_s, compute_s)

    def job(self, outcome: str, duration_s: float | None) -> None:
        """dehaze_jobs_total{outcome} and dehaze_job_duration_seconds."""
        self._metrics.record_job(outcome, duration_s)

    def gpu_memory(self, stats: dict[str, int]) -> None:
        """dehaze_gpu_memory_bytes{kind}."""
        self._metrics.set_gpu_memory(stats["allocated"], stats["reserved"], stats["max_allocated"])

    def model_info(self, variant: str, version: str, device: str, dtype: str, licence: str) -> None:
        """dehaze_model_info (its labels do not include the licence)."""
        self._metrics.set_model_info(variant, version, device, dtype)

    def cancelled_tiles(self, count: int) -> None:
        """dehaze_cancelled_tiles_total."""
        self._metrics.record_cancelled_tiles(count)


def default_observer() -> WorkerObserver:
    """``MetricsObserver``, or ``NullObserver`` where ``service.metrics`` cannot be imported."""
    try:
        return MetricsObserver()
    except ImportError:
        return NullObserver()
