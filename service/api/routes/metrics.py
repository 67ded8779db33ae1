"""GET /metrics: the Prometheus exposition of this process (queue gauges refreshed on each scrape)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import QueueDep
from service.metrics import set_queue_depth, set_workers_alive

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "the Prometheus text exposition format"}},
    summary="Prometheus metrics",
)
async def metrics(queue: QueueDep) -> Response:
    """Every metric of this process; queue depth and live workers are read from the queue first."""
    try:
        async with asyncio.timeout(2.0):
            set_queue_depth(await queue.length())
            set_workers_alive(await queue.workers_alive())
    except Exception as error:  # a scrape must not fail because the queue is down; the gauges keep old values
        logger.warning("cannot refresh queue gauges: %s", error)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
