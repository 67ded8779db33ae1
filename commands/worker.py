"""``dehaze worker``: a batching inference worker on the Redis queue (``DEHAZE_REDIS_URL``).

It exports the artifact if needed, serves its own Prometheus metrics on ``DEHAZE_WORKER_METRICS_PORT``
(0 = off), and on SIGTERM or SIGINT stops taking jobs, finishes the batch in hand and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from commands._common import CommandError, load_settings, prepare_artifact
from service.config import Settings

__all__ = ["HELP", "add_arguments", "run"]

HELP = "a batching inference worker on a Redis queue"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` (default: DEHAZE_WORKER_METRICS_PORT or 9100)."""
    parser.add_argument("--metrics-port", type=int, help="port of this worker's /metrics (0 = off)")


def run(args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM/SIGINT; returns 2 when the settings are invalid or Redis is not configured."""
    try:
        settings = load_settings(worker_metrics_port=args.metrics_port)
        if not settings.redis_url:
            raise CommandError(
                "dehaze worker needs a Redis queue: set DEHAZE_REDIS_URL (e.g. redis://127.0.0.1:6379/0); "
                "`dehaze serve` runs an embedded worker without Redis"
            )
        prepare_artifact(settings)
    except CommandError as error:
        logger.error("%s", error)
        return 2
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.host)
        logger.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: Settings) -> None:
    from service.queue.factory import make_queue
    from service.worker.loop import run_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    queue = make_queue(settings)
    try:
        await run_worker(queue, settings, ready=asyncio.Event(), stop=stop)
    finally:
        await queue.close()
    logger.info("worker stopped")


def _request_stop(stop: asyncio.Event, signum: int) -> None:
    logger.info("%s received: draining the batch in hand, then stopping", signal.Signals(signum).name)
    stop.set()
