"""GET /healthz (the process is alive) and GET /readyz (it can take work now)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import ServicesDep
from service.api.schemas import HealthResponse, ModelInfo, ReadinessResponse
from service.api.state import Services

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_PROBE_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz(request: Request) -> HealthResponse:
    """200 while the process serves HTTP, with the model it last saw served (``model.name``: DCMPNet or CORUN)."""
    services: Services | None = getattr(request.app.state, "services", None)
    model = services.model if services is not None else None
    return HealthResponse(status="ok", model=ModelInfo(**model) if model else None)


@router.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "not ready, with the reasons"}},
    summary="Readiness",
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the queue answers, a worker is alive, the FADE pool has started and (embedded) the model is warm."""
    report = await readiness(services)
    return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)


async def readiness(services: Services) -> ReadinessResponse:
    """Check everything a request needs; the reasons list what is missing."""
    reasons: list[str] = []
    if services.embedded:
        if services.worker_error:
            reasons.append(f"the in-process worker stopped: {services.worker_error}")
        elif services.worker_ready is None or not services.worker_ready.is_set():
            reasons.append("the in-process worker is still loading and warming the model")
    if not services.density.warmed:
        reasons.append("the FADE pool is still starting")
    alive = depth = 0
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            if not await services.queue.ping():
                raise ConnectionError("ping failed")
            alive = await services.queue.workers_alive()
            depth = await services.queue.length()
    except Exception as error:  # any failure of the backend means "not ready", with the reason
        reasons.append(f"the job queue is unreachable: {error or type(error).__name__}")
    else:
        if alive < 1:
            reasons.append("no worker is alive")
    return ReadinessResponse(ready=not reasons, reasons=reasons, workers_alive=alive, queue_depth=depth)
