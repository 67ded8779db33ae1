"""The request side of one job: check the upload, submit it, wait for the result, cancel on disconnect.

Every failure becomes an ``ApiError`` with the status the contract gives it, so the routes stay short. The header
check runs in a thread, never on the event loop: its parsing is bounded (``service.headers``), but an event loop
that parses uploads cannot answer ``/healthz`` meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

from fastapi import Request

from service import codec
from service.api.errors import ApiError, ClientDisconnectedError
from service.config import Settings
from service.errors import ImageError
from service.queue.base import (
    Job,
    JobQueue,
    JobResult,
    OutputSpec,
    QueueError,
    QueueFullError,
    QueueUnavailableError,
    ResultTimeoutError,
)
from service.worker.tiling import check_compute, count_tiles

__all__ = ["ImageProbe", "check_image", "run_job"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageProbe:
    """What the API read from an upload's header; it travels on the job, so the worker parses no header.

    Attributes:
        width: the displayed width (after EXIF orientation).
        height: the displayed height.
        tiles: the tiles the worker will cut the image into (its cost in a batch).
    """

    width: int
    height: int
    tiles: int


async def check_image(data: bytes, settings: Settings, compute_budget: int | None = None) -> ImageProbe:
    """Size and tile count from the image header, before anything is decoded (in a thread).

    Args:
        data: the upload.
        settings: the pixel limit and the tiling.
        compute_budget: the most pixels of model work the request may cost; None for requests without model work.

    Raises:
        ApiError: 413 above ``max_pixels`` or the compute budget, 415 for a format we do not accept, 422 for a
            broken header, one beyond the parsing budget, or one whose data cannot hold its pixels.
    """
    try:
        return await asyncio.to_thread(_check, data, settings, compute_budget)
    except ImageError as error:
        raise ApiError(error.status, str(error)) from error


def _check(data: bytes, settings: Settings, compute_budget: int | None) -> ImageProbe:
    width, height = codec.probe_image(data, settings.max_pixels)
    if compute_budget is not None:
        check_compute(
            height, width, settings.tile_size, settings.tile_overlap, settings.bucket_multiple, compute_budget
        )
    return ImageProbe(width, height, count_tiles(height, width, settings.tile_size, settings.tile_overlap))


async def run_job(
    request: Request,
    queue: JobQueue,
    settings: Settings,
    payload: bytes,
    output: OutputSpec,
    probe: ImageProbe,
) -> JobResult:
    """Submit one job and wait for its result, cancelling it if the client disconnects.

    Args:
        request: the HTTP request (watched for a disconnect).
        queue: the job queue.
        settings: the request timeout.
        payload: the checked upload.
        output: what the worker encodes.
        probe: the upload's size and tiles from ``check_image``; the worker batches and checks by them.

    Raises:
        ApiError: 503 (with Retry-After) when the queue is full, 503 when it is unreachable, 504 when no
            result arrives within ``request_timeout_s``, or the job's own error status when it failed (a 503
            from the worker, e.g. a result Redis could not store, carries Retry-After too).
        ClientDisconnectedError: when the client disconnected first.
    """
    job = Job(
        payload=payload,
        output=output,
        deadline=time.time() + settings.request_timeout_s,
        width=probe.width,
        height=probe.height,
        tiles=probe.tiles,
    )
    try:
        await queue.submit(job)
    except QueueFullError as error:
        retry = str(max(1, math.ceil(error.retry_after_s)))
        raise ApiError(503, "the service is busy: the job queue is full", {"Retry-After": retry}) from error
    except QueueUnavailableError as error:
        raise ApiError(503, f"the job queue is unavailable: {error}", {"Retry-After": "5"}) from error
    result = await _wait_or_cancel(request, queue, job.id, settings.request_timeout_s)
    if not result.ok:
        status = result.error_status or 500
        raise ApiError(status, result.error or "the job failed", {"Retry-After": "5"} if status == 503 else None)
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.note_model(result.model.get("variant"), result.model.get("version"), result.model.get("licence"))
    return result


async def _wait_or_cancel(request: Request, queue: JobQueue, job_id: str, timeout_s: float) -> JobResult:
    waiting = asyncio.create_task(queue.wait_result(job_id, timeout_s))
    watching = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({waiting, watching}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is shutting down: leave no waiter behind
        waiting.cancel()
        raise
    finally:
        watching.cancel()
    if not waiting.done():
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await _cancel(queue, job_id)
        raise ClientDisconnectedError(job_id)
    try:
        return waiting.result()
    except ResultTimeoutError as error:
        await _cancel(queue, job_id)
        raise ApiError(504, f"no result within {timeout_s:g} s; try again later") from error
    except QueueUnavailableError as error:
        raise ApiError(503, f"the job queue is unavailable: {error}", {"Retry-After": "5"}) from error


async def _cancel(queue: JobQueue, job_id: str) -> None:
    """Cancel a job nobody waits for any more, whatever the queue's state.

    A queue that cannot record the cancellation (down, or Redis at maxmemory) must not turn the answer into a 500:
    the job then runs to its end or its deadline, and its result expires unread.
    """
    try:
        await queue.cancel(job_id)
    except QueueError as error:
        logger.warning("job %s could not be cancelled: %s", job_id, error)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
