"""The job queue protocol shared by the API (producer) and the workers (consumers).

A job carries the uploaded bytes, the output the request asked for (``OutputSpec``) and what the API already read
from the image's header (its size and the tiles it will be cut into); the worker decodes, runs the model and
encodes, so the API process never touches the model, and the worker never parses a header again. A result is a
plain, JSON-friendly record plus the encoded output bytes, so that the Redis backend can store it as-is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Protocol, runtime_checkable

from service.codec import MEDIA_TYPES

__all__ = [
    "Job",
    "JobQueue",
    "JobResult",
    "OutputSpec",
    "PoisonedHandler",
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


@dataclass(frozen=True)
class OutputSpec:
    """What the worker encodes for one job. The API decides all of it; the worker only follows.

    The defaults are the only ones: a queue entry that omits a field gets the default here, on either side.
    Invalid values raise ``ValueError`` when the spec is built, so an unreadable entry fails at ``take``, alone.

    Attributes:
        format: the dehazed image's format, a key of ``service.codec.MEDIA_TYPES`` (png, jpeg, webp).
        quality: JPEG/WebP quality, 1 to 100 (``/dehaze`` sets the request's, or ``DEHAZE_DEFAULT_QUALITY``).
        want_image: encode the dehazed image.
        want_depth: encode the depth map.
        depth_colormap: the depth map as a colour-mapped 8-bit RGB PNG instead of 16-bit grey.
    """

    format: str = "png"
    quality: int = 90
    want_image: bool = True
    want_depth: bool = False
    depth_colormap: bool = False

    def __post_init__(self) -> None:
        if self.format not in MEDIA_TYPES:
            raise ValueError(f"unknown output format {self.format!r}; expected one of {sorted(MEDIA_TYPES)}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {self.quality!r}")
        flags = {"want_image": self.want_image, "want_depth": self.want_depth, "depth_colormap": self.depth_colormap}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")

    def to_wire(self) -> str:
        """The JSON object a queue entry carries (the keys are the field names)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_wire(cls, text: str | bytes) -> OutputSpec:
        """The inverse of ``to_wire``; absent keys take their defaults.

        Raises:
            ValueError: not a JSON object, an unknown key, or an invalid value.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"an output spec is a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown output spec keys {sorted(unknown)}")
        return cls(**data)


@dataclass
class Job:
    """One request's work.

    Attributes:
        payload: the uploaded file, undecoded (the API has already checked its size and header).
        output: what to encode.
        id: unique job id.
        enqueued_at: wall-clock time (``time.time()``) of submission, for the queue-wait metric.
        deadline: wall-clock time after which nobody waits for the result any more; workers skip such jobs.
        deliveries: how many times the job has been handed to a worker (set by the backend).
        width: the image's displayed width (after EXIF orientation), as the API read it from the header.
        height: its displayed height. The worker checks the compute budget from these before decoding and fails
            the job as a malformed image when the decoded size differs (so 0, "not probed", always fails).
        tiles: the tiles the image is cut into (``service.worker.tiling.count_tiles``), the job's cost when the
            worker fills a batch; 0 when unknown, which costs 1.
    """

    payload: bytes
    output: OutputSpec = field(default_factory=OutputSpec)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: float = field(default_factory=time.time)
    deadline: float = float("inf")
    deliveries: int = 0
    width: int = 0
    height: int = 0
    tiles: int = 0


PoisonedHandler = Callable[[Job], None]
"""Called by ``JobQueue.take`` for each job it gave up on instead of handing it out (already answered with a 500)."""


@dataclass
class JobResult:
    """What a worker returns for one job.

    Attributes:
        job_id: the job's id.
        ok: False when the job failed; ``error_status`` and ``error`` then say why.
        image: the encoded dehazed image (in the job's ``output.format``), or None.
        image_media_type: e.g. ``image/png``.
        depth: the depth map as an encoded PNG (16-bit grey, or 8-bit RGB when colour-mapped), or None.
        width: the output width (the input's width after EXIF orientation).
        height: the output height.
        timings_ms: ``queue_wait``, ``decode``, ``compute``, ``encode`` in milliseconds.
        model: ``variant``, ``version`` and ``licence`` (SPDX id) of the model that produced it.
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
    async def take(self, max_jobs: int, block_ms: int, on_poisoned: PoisonedHandler | None = None) -> list[Job]:
        """Up to ``max_jobs`` jobs, waiting at most ``block_ms`` for the first one (may return []).

        A job the backend gives up on instead (delivered more than its limit because the workers holding it died,
        or an entry it cannot read) is answered with a 500 and removed, then passed to ``on_poisoned``.
        """
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
