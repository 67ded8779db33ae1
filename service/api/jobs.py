"""The request side of one job: check the upload, submit it, wait for the result, cancel on disconnect.

Every failure becomes an ``ApiError`` with the status the contract gives it, so the routes stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

from fastapi import Request

from service import imaging
from service.api.errors import ApiError, ClientDisconnectedError
from service.config import Settings
from service.queue.base import Job, JobQueue, JobResult, QueueFullError, QueueUnavailableError, ResultTimeoutError

__all__ = ["check_image", "run_job"]

_IMAGE_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (imaging.TooLargeError, 413),
    (imaging.UnsupportedImageError, 415),
    (imaging.MalformedImageError, 422),
)


def check_image(data: bytes, settings: Settings) -> tuple[int, int]:
    """Width and height from the image header, before anything is decoded.

    Raises:
        ApiError: 413 above ``max_pixels``, 415 for a format we do not accept, 422 for a broken header.
    """
    try:
        return imaging.probe_image(data, settings.max_pixels)
    except Exception as error:
        for kind, status in _IMAGE_ERRORS:
            if isinstance(error, kind):
                raise ApiError(status, str(error)) from error
        raise


async def run_job(
    request: Request, queue: JobQueue, settings: Settings, payload: bytes, options: dict[str, Any]
) -> JobResult:
    """Submit one job and wait for its result, cancelling it if the client disconnects.

    Raises:
        ApiError: 503 (with Retry-After) when the queue is full, 503 when it is unreachable, 504 when no
            result arrives within ``request_timeout_s``, or the job's own error status when it failed.
        ClientDisconnectedError: when the client disconnected first.
    """
    job = Job(payload=payload, options=options, deadline=time.time() + settings.request_timeout_s)
    try:
        await queue.submit(job)
    except QueueFullError as error:
        retry = str(max(1, math.ceil(error.retry_after_s)))
        raise ApiError(503, "the service is busy: the job queue is full", {"Retry-After": retry}) from error
    except QueueUnavailableError as error:
        raise ApiError(503, f"the job queue is unavailable: {error}", {"Retry-After": "5"}) from error
    result = await _wait_or_cancel(request, queue, job.id, settings.request_timeout_s)
    if not result.ok:
        raise ApiError(result.error_status or 500, result.error or "the job failed")
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
        await queue.cancel(job_id)
        raise ClientDisconnectedError(job_id)
    try:
        return waiting.result()
    except ResultTimeoutError as error:
        await queue.cancel(job_id)
        raise ApiError(504, f"no result within {timeout_s:g} s; try again later") from error
    except QueueUnavailableError as error:
        raise ApiError(503, f"the job queue is unavailable: {error}", {"Retry-After": "5"}) from error


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
