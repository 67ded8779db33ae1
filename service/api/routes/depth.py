"""POST /depth: the depth map alone (16-bit greyscale PNG, or a colour-mapped PNG).

Whatever the model family: DCMPNet's depth network, or for CORUN (no depth network) a depth derived from its
transmission map (``model.corun_pipeline``); the OpenAPI description says so.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from service.api.deps import ComputeBudgetDep, QueueDep, SettingsDep, UploadDep, require_api_key
from service.api.jobs import check_image, run_job
from service.api.openapi import ERROR_RESPONSES, UPLOAD_BODY
from service.api.schemas import DEPTH_DESCRIPTION
from service.api.server_timing import server_timing
from service.queue.base import OutputSpec

__all__ = ["router"]

router = APIRouter(tags=["dehaze"], dependencies=[Depends(require_api_key)])


@router.post(
    "/depth",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the depth map"}, **ERROR_RESPONSES},
    openapi_extra=UPLOAD_BODY,
    summary="Estimate the depth map of a hazy image",
    description="Upload an image in the multipart field `image`; get its depth map: a " + DEPTH_DESCRIPTION,
)
async def depth(
    request: Request,
    queue: QueueDep,
    settings: SettingsDep,
    budget: ComputeBudgetDep,
    payload: UploadDep,
    colormap: Annotated[bool, Query(description="a colour-mapped 8-bit RGB PNG instead of 16-bit grey")] = False,
) -> Response:
    """Upload an image in the multipart field ``image``; get its depth map (0 = near, white/65535 = far)."""
    started = time.perf_counter()
    probe = await check_image(payload, settings, budget)
    output = OutputSpec(want_image=False, want_depth=True, depth_colormap=colormap)
    result = await run_job(request, queue, settings, payload, output, probe)
    if result.depth is None:
        raise RuntimeError(f"job {result.job_id} returned no depth map")
    return Response(result.depth, media_type="image/png", headers=server_timing(result.timings_ms, started))
