"""``dehaze api``: the HTTP API alone, submitting jobs to workers through Redis (``DEHAZE_REDIS_URL``)."""

from __future__ import annotations

import argparse
import logging

from service.commands._common import CommandError, add_server_arguments, load_settings
from service.main import create_app
from service.server import serve

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port``."""
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve the API until interrupted; returns 2 when the settings are invalid or Redis is not configured."""
    try:
        settings = load_settings(host=args.host, port=args.port)
        if not settings.redis_url:
            raise CommandError(
                "dehaze api needs a Redis queue: set DEHAZE_REDIS_URL (e.g. redis://127.0.0.1:6379/0), "
                "or run `dehaze serve` for the embedded API and worker without Redis"
            )
    except CommandError as error:
        logger.error("%s", error)
        return 2
    logger.info("API on http://%s:%d, queue %s", settings.host, settings.port, settings.redis_url)
    serve(create_app(settings), settings)
    return 0
