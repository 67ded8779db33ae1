"""``dehaze serve``: the API and the batching worker in one process (embedded default, no Redis needed).

Settings come from ``DEHAZE_*`` variables; ``--host``/``--port`` override them. The in-process queue is used
(``DEHAZE_REDIS_URL`` is ignored here: use ``dehaze api`` plus ``dehaze worker`` for Redis). On first start the
TorchScript artifact is exported from the weights.
"""

from __future__ import annotations

import argparse
import logging

from commands._common import add_server_arguments, prepare_artifact, serve_api
from service.config import Settings

__all__ = ["HELP", "add_arguments", "run"]

HELP = "API and worker in one process (embedded default, no Redis needed)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port``."""
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Export the artifact if needed, then serve until interrupted; returns the exit status."""
    return serve_api(args, _embedded)


def _embedded(settings: Settings) -> Settings:
    """The settings without a Redis URL, once the artifact exists."""
    if settings.redis_url:
        logger.warning("dehaze serve uses its in-process queue; DEHAZE_REDIS_URL is ignored")
        settings = settings.model_copy(update={"redis_url": None})
    prepare_artifact(settings)
    logger.info("serving on http://%s:%d (embedded worker, in-process queue)", settings.host, settings.port)
    return settings
