"""The FastAPI application: ``create_app(settings)`` and the lifespan that opens and closes what it needs.

Nothing is created at import. The lifespan opens the job queue (in-process when ``redis_url`` is unset,
Redis otherwise) and the FADE process pool; in embedded mode (no Redis) it also runs the batching worker as
an asyncio task in this process, which loads and warms the model before ``/readyz`` turns green. Besides the
API's routes, the app serves the web page at ``/`` and the API documentation at ``/docs`` from local files
(``service.web``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import install_error_handlers
from service.api.limits import BodyLimitMiddleware
from service.api.routes import ROUTERS
from service.api.state import Services
from service.config import Settings
from service.density import DensityScorer
from service.metrics import observe_request
from service.web import add_web_routes
from service.worker.observers import MetricsObserver, WorkerObserver

__all__ = ["MULTIPART_ALLOWANCE", "RequestMetricsMiddleware", "ServedModelObserver", "create_app"]

logger = logging.getLogger(__name__)

MULTIPART_ALLOWANCE = 64 * 1024
"""Bytes of multipart framing (boundaries, part headers, other small fields) allowed above ``max_upload_bytes``."""

_WORKER_STOP_TIMEOUT_S = 30.0


class RequestMetricsMiddleware:
    """Record each HTTP request's latency and count by route template (e.g. ``/dehaze``), method and status.

    The route template comes from the matched route after the app ran, so label values stay bounded: an
    unknown path is recorded as ``unmatched``. A request whose client disconnected is recorded with status 499
    (``service.api.errors.CLIENT_CLOSED_REQUEST``).
    """

    def __init__(self, app: ASGIApp, known_paths: frozenset[str]) -> None:
        """Wrap ``app``; ``known_paths`` (paths without parameters) name requests answered before routing."""
        self.app = app
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and observe it once the app is done."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            observe_request(self._template(scope), scope["method"], status, time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        route = getattr(scope.get("route"), "path", None)
        if route is None and scope["path"] in self.known_paths:  # answered before routing, e.g. a 413
            route = scope["path"]
        return route or "unmatched"


class ServedModelObserver:
    """The embedded worker's metric hooks, forwarded to ``inner``; the loaded model is also kept for /healthz.

    Args:
        inner: the hooks that record metrics.
        services: where the served model is kept (``Services.model``).
    """

    def __init__(self, inner: WorkerObserver, services: Services) -> None:
        self._inner = inner
        self._services = services

    def batch(self, size: int, waits_s: Sequence[float], compute_s: float) -> None:
        """Forwarded."""
        self._inner.batch(size, waits_s, compute_s)

    def job(self, outcome: str, duration_s: float | None) -> None:
        """Forwarded."""
        self._inner.job(outcome, duration_s)

    def gpu_memory(self, stats: dict[str, int]) -> None:
        """Forwarded."""
        self._inner.gpu_memory(stats)

    def model_info(self, variant: str, version: str, device: str, dtype: str, licence: str) -> None:
        """Kept on the services, then forwarded."""
        self._services.note_model(variant, version, licence)
        self._inner.model_info(variant, version, device, dtype, licence)

    def cancelled_tiles(self, count: int) -> None:
        """Forwarded."""
        self._inner.cancelled_tiles(count)


async def _run_embedded_worker(services: Services, stop: asyncio.Event) -> None:
    """The in-process worker; a crash is recorded for /readyz instead of vanishing silently."""
    from service.worker.loop import run_worker  # imported on use: API-only processes never load torch

    observer = ServedModelObserver(MetricsObserver(), services)
    try:
        await run_worker(services.queue, services.settings, ready=services.worker_ready, stop=stop, observer=observer)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        services.worker_error = f"{type(error).__name__}: {error}"
        logger.exception("the in-process worker stopped")
        raise


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from service.queue.factory import make_queue

    settings: Settings = app.state.settings
    queue = make_queue(settings)
    density = DensityScorer(settings.density_workers, settings.density_max_pixels)
    services = Services(settings=settings, queue=queue, density=density)
    services.compute_budget = settings.compute_budget_on(_worker_device(settings))
    stop = asyncio.Event()
    if settings.redis_url is None:
        services.worker_ready = asyncio.Event()
        services.worker_task = asyncio.create_task(_run_embedded_worker(services, stop), name="embedded-worker")
    app.state.services = services
    warm = asyncio.create_task(density.warm_up(), name="density-warm-up")
    logger.info("API started (%s queue)", "in-process" if settings.redis_url is None else "Redis")
    try:
        yield
    finally:
        warm.cancel()
        await _stop_worker(services, stop)
        await queue.close()
        density.close()
        logger.info("API stopped")


def _worker_device(settings: Settings) -> str:
    """The device type the workers compute on, as far as this process can tell.

    The embedded worker runs here, so ``auto`` is resolved (torch is loaded for it anyway). An API on Redis never
    loads torch: ``auto`` counts as CUDA, the larger budget, and a CPU worker refuses what exceeds its own.
    """
    if settings.device != "auto":
        return settings.device
    if settings.redis_url is None:
        from model.device import resolve_device

        return resolve_device("auto").type
    return "cuda"


async def _stop_worker(services: Services, stop: asyncio.Event) -> None:
    """Ask the in-process worker to drain and stop; cancel it if it takes too long."""
    task = services.worker_task
    if task is None:
        return
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), _WORKER_STOP_TIMEOUT_S)
    except TimeoutError:
        logger.warning("the in-process worker did not stop in %.0f s; cancelling it", _WORKER_STOP_TIMEOUT_S)
        task.cancel()
    except Exception:  # already logged by _run_embedded_worker
        pass
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def create_app(settings: Settings) -> FastAPI:
    """The application for ``settings``; queue, FADE pool and (embedded) worker start with its lifespan."""
    app = FastAPI(
        title="dehaze",
        summary="Single-image dehazing (DCMPNet or CORUN): dehazed image, depth map and FADE haze density.",
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,  # /docs comes from service.web: Swagger UI from local files, no CDN, no inline script
        redoc_url=None,  # ReDoc needs inline styles and a CDN logo: it cannot meet the pages' CSP (service.web)
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    add_web_routes(app)  # GET /, /docs, /static/{name}
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes + MULTIPART_ALLOWANCE,
        upload_limit=settings.max_upload_bytes,
    )
    # added last = outermost: it also records the body limit's 413s
    known_paths = frozenset(getattr(route, "path", "") for router in ROUTERS for route in router.routes)
    app.add_middleware(RequestMetricsMiddleware, known_paths=known_paths)
    return app
