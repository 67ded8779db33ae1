"""The job queue protocol shared by the API (producer) and the workers (consumers).

A job carries the uploaded bytes and the options of one request; the worker decodes, runs the model and
encodes, so the API process never touches the model. A result is a plain, JSON-friendly record plus the
encoded output bytes, so that the Redis backend can store it as-is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Job",
    "JobQueue",
    "JobResult",
    "QueueError",
    "QueueFullError",
    "QueueUnavailableError",
    "ResultTimeoutError",
]


class QueueError(Exception):
    """Base class of queue errors."""


class QueueFullError(QueueError):
    """The queue holds ``max_queue_length`` jobs already; the API answers 503 with Retry-After."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__("the job queue is full")
        self.retry_after_s = retry_after_s


class QueueUnavailableError(QueueError):
    """The queue backend cannot be reached (e.g. Redis is down); the API answers 503."""


class ResultTimeoutError(QueueError):
    """No result arrived within the request's deadline; the API answers 504."""


@dataclass
class Job:
    """One request's work.

    Attributes:
        payload: the uploaded file, undecoded (the API has already checked its size and header).
        options: output options: ``format`` (png/jpeg/webp), ``quality``, ``want_image``, ``want_depth``,
            ``depth_colormap``.
        id: unique job id.
        enqueued_at: wall-clock time (``time.time()``) of submission, for the queue-wait metric.
        deadline: wall-clock time after which nobody waits for the result any more; workers skip such jobs.
        deliveries: how many times the job has been handed to a worker (set by the backend).
        width: the image's displayed width, as the API read it from the header (0 when unknown).
        height: its displayed height (0 when unknown); the worker plans its batches from these without parsing.
    """

    payload: bytes
    options: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: float = field(default_factory=time.time)
    deadline: float = float("inf")
    deliveries: int = 0
    width: int = 0
    height: int = 0


@dataclass
class JobResult:
    """What a worker returns for one job.

    Attributes:
        job_id: the job's id.
        ok: False when the job failed; ``error_status`` and ``error`` then say why.
        image: the encoded dehazed image (format from the job's options), or None.
        image_media_type: e.g. ``image/png``.
        depth: the depth map as an encoded PNG (16-bit grey, or 8-bit RGB when colour-mapped), or None.
        width: the output width (the input's width after EXIF orientation).
        height: the output height.
        timings_ms: ``queue_wait``, ``decode``, ``compute``, ``encode`` in milliseconds.
        model: ``variant`` and ``version`` of the model that produced it.
        error_status: the HTTP status the API should answer with (422, 415, 500, ...).
        error: a human-readable message.
    """

    job_id: str
    ok: bool = True
    image: bytes | None = None
    image_media_type: str | None = None
    depth: bytes | None = None
    width: int = 0
    height: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)
    error_status: int = 0
    error: str = ""

    @classmethod
    def failure(cls, job_id: str, status: int, message: str) -> JobResult:
        """A failed result with the HTTP status the API should return."""
        return cls(job_id=job_id, ok=False, error_status=status, error=message)


@runtime_checkable
class JobQueue(Protocol):
    """Both sides of the queue. Every backend (in-process, Redis Streams) implements all of it."""

    # -- API side -------------------------------------------------------------------------------
    async def submit(self, job: Job) -> None:
        """Enqueue a job. Raises QueueFullError or QueueUnavailableError; stores nothing on failure."""
        ...

    async def wait_result(self, job_id: str, timeout_s: float) -> JobResult:
        """Block until the job's result exists. Raises ResultTimeoutError or QueueUnavailableError."""
        ...

    async def cancel(self, job_id: str) -> None:
        """The client went away: the job is skipped if not started, and its keys expire."""
        ...

    async def length(self) -> int:
        """Jobs submitted and not yet finished (waiting plus in progress)."""
        ...

    async def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        """The ids among ``job_ids`` whose request was cancelled (client gone or timed out) while a worker held them."""
        ...

    async def workers_alive(self) -> int:
        """Workers whose heartbeat is recent."""
        ...

    async def ping(self) -> bool:
        """True when the backend is reachable."""
        ...

    # -- worker side ----------------------------------------------------------------------------
    async def take(self, max_jobs: int, block_ms: int) -> list[Job]:
        """Up to ``max_jobs`` jobs, waiting at most ``block_ms`` for the first one (may return [])."""
        ...

    async def finish(self, result: JobResult) -> None:
        """Store the result for the waiting request and acknowledge the job."""
        ...

    async def heartbeat(self, worker_id: str) -> None:
        """Record that ``worker_id`` is alive (expires after a few intervals)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
