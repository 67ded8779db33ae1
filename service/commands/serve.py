"""``dehaze serve``: the API and the batching worker in one process (embedded default, no Redis needed).

Settings come from ``DEHAZE_*`` variables; ``--host``/``--port`` override them. The in-process queue is used
(``DEHAZE_REDIS_URL`` is ignored here: use ``dehaze api`` plus ``dehaze worker`` for Redis). On first start the
TorchScript artifact is exported from the weights.
"""

from __future__ import annotations

import argparse
import logging

from service.commands._common import CommandError, add_server_arguments, load_settings, prepare_artifact
from service.main import create_app
from service.server import serve

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port``."""
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Export the artifact if needed, then serve until interrupted; returns the exit status."""
    try:
        settings = load_settings(host=args.host, port=args.port)
        if settings.redis_url:
            logger.warning("dehaze serve uses its in-process queue; DEHAZE_REDIS_URL is ignored")
            settings = settings.model_copy(update={"redis_url": None})
        prepare_artifact(settings)
    except CommandError as error:
        logger.error("%s", error)
        return 2
    logger.info("serving on http://%s:%d (embedded worker, in-process queue)", settings.host, settings.port)
    serve(create_app(settings), settings)
    return 0
