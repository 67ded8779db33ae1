"""POST /dehaze: the dehazed image (PNG, JPEG or WebP), or all three outputs as JSON."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from service.api.deps import ComputeBudgetDep, DensityDep, QueueDep, SettingsDep, UploadDep, require_api_key
from service.api.jobs import check_image, run_job
from service.api.negotiation import choose_format, wants_json
from service.api.openapi import IMAGE_RESPONSES, UPLOAD_BODY
from service.api.schemas import DehazeResponse, ModelInfo
from service.api.server_timing import server_timing
from service.codec import MEDIA_TYPES
from service.queue.base import OutputSpec

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["dehaze"], dependencies=[Depends(require_api_key)])


@router.post(
    "/dehaze",
    response_model=DehazeResponse,
    responses=IMAGE_RESPONSES,
    openapi_extra=UPLOAD_BODY,
    summary="Dehaze an image",
)
async def dehaze(
    request: Request,
    queue: QueueDep,
    settings: SettingsDep,
    density: DensityDep,
    budget: ComputeBudgetDep,
    payload: UploadDep,
    format: Annotated[str | None, Query(description="png (default), jpeg/jpg or webp")] = None,
    quality: Annotated[int | None, Query(ge=1, le=100, description="JPEG/WebP quality")] = None,
    response: Annotated[str | None, Query(description="json: all three outputs as JSON")] = None,
    accept: Annotated[str, Header()] = "",
) -> Response | DehazeResponse:
    """Upload a hazy image in the multipart field ``image``; get the dehazed image back.

    The format comes from ``format``, else the Accept header (image/png, image/jpeg, image/webp), else PNG.
    With ``Accept: application/json`` or ``?response=json`` the body is JSON with the dehazed image, the depth
    map (16-bit PNG) and the FADE haze density before and after, each image base64-encoded.
    """
    started = time.perf_counter()
    image_format = choose_format(format, accept)
    as_json = wants_json(response, accept)
    probe = await check_image(payload, settings, budget)
    output = OutputSpec(format=image_format, quality=quality or settings.default_quality, want_depth=as_json)
    fade_in = asyncio.create_task(density.score_bytes(payload)) if as_json else None
    try:
        result = await run_job(request, queue, settings, payload, output, probe)
    except BaseException:
        if fade_in is not None:
            fade_in.cancel()
        raise
    if result.image is None:
        raise RuntimeError(f"job {result.job_id} returned no image")
    if fade_in is None:
        media_type = result.image_media_type or MEDIA_TYPES[image_format]
        return Response(result.image, media_type=media_type, headers=server_timing(result.timings_ms, started))
    density_started = time.perf_counter()
    deadline = started + settings.request_timeout_s
    fade_out = await _fade_by(density.score_bytes(result.image), deadline)
    timings = {
        **result.timings_ms,
        "density": (time.perf_counter() - density_started) * 1000,
        "total": (time.perf_counter() - started) * 1000,
    }
    return DehazeResponse(
        image=base64.b64encode(result.image).decode("ascii"),
        image_media_type=result.image_media_type or MEDIA_TYPES[image_format],
        depth=base64.b64encode(result.depth or b"").decode("ascii"),
        fade_in=await _fade_by(fade_in, deadline),
        fade_out=fade_out,
        width=result.width,
        height=result.height,
        model=ModelInfo.of_result(result.model),
        timings=timings,
    )


async def _fade_by(score: Awaitable[float], deadline: float) -> float | None:
    """A FADE score, or None (as for an undefined score) when it is not ready by ``deadline`` (perf_counter time).

    The dehazed image is ready by then: a busy FADE pool must not hold the answer beyond the request's timeout.
    """
    try:
        return await asyncio.wait_for(score, max(0.0, deadline - time.perf_counter()))
    except TimeoutError:
        logger.warning("FADE did not finish before the request's deadline; answering without it")
        return None
