"""``dehaze api``: the HTTP API alone, submitting jobs to workers through Redis (``DEHAZE_REDIS_URL``)."""

from __future__ import annotations

import argparse
import logging

from commands._common import CommandError, add_server_arguments, serve_api
from service.config import Settings

__all__ = ["HELP", "add_arguments", "run"]

HELP = "the HTTP API alone, on a Redis queue"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port``."""
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve the API until interrupted; returns 2 when the settings are invalid or Redis is not configured."""
    return serve_api(args, _on_redis)


def _on_redis(settings: Settings) -> Settings:
    if not settings.redis_url:
        raise CommandError(
            "dehaze api needs a Redis queue: set DEHAZE_REDIS_URL (e.g. redis://127.0.0.1:6379/0), "
            "or run `dehaze serve` for the embedded API and worker without Redis"
        )
    logger.info("API on http://%s:%d, queue %s", settings.host, settings.port, settings.redis_url)
    return settings
