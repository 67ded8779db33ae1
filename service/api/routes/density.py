"""POST /density: the FADE haze density of an upload (no model work)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends

from service.api.deps import DensityDep, SettingsDep, UploadDep, require_api_key
from service.api.errors import ApiError
from service.api.jobs import check_image
from service.api.openapi import ERROR_RESPONSES, UPLOAD_BODY
from service.api.schemas import DensityResponse

__all__ = ["router"]

router = APIRouter(tags=["density"], dependencies=[Depends(require_api_key)])


@router.post(
    "/density",
    response_model=DensityResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=UPLOAD_BODY,
    summary="Haze density (FADE) of an image",
)
async def density(settings: SettingsDep, scorer: DensityDep, payload: UploadDep) -> DensityResponse:
    """Upload an image in the multipart field ``image``; get its FADE score (lower = less haze).

    The score is computed within ``request_timeout_s`` (504 after), like a job's result.
    """
    started = time.perf_counter()
    probe = await check_image(payload, settings)
    try:
        fade = await asyncio.wait_for(scorer.score_bytes(payload), settings.request_timeout_s)
    except ValueError as error:  # the header was fine but the pixel data is broken
        raise ApiError(422, str(error)) from error
    except TimeoutError as error:  # the pool is busy (or starved of CPU): the request's wait is bounded like a job's
        raise ApiError(504, f"no haze density within {settings.request_timeout_s:g} s; try again later") from error
    elapsed_ms = (time.perf_counter() - started) * 1000
    return DensityResponse(
        fade=fade, width=probe.width, height=probe.height, timings={"density": elapsed_ms, "total": elapsed_ms}
    )
