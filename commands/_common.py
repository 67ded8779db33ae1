"""What several commands share: settings from the environment with CLI overrides, the model artifact, the server.

``serve`` and ``api`` differ only in how they check and adjust the settings; :func:`serve_api` does the rest for
both.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.config import Settings

__all__ = ["CommandError", "add_server_arguments", "load_settings", "prepare_artifact", "serve_api"]

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A problem the user can fix (bad settings, missing files): logged without a traceback, exit ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port`` (defaults: DEHAZE_HOST / DEHAZE_PORT, else 127.0.0.1:8000)."""
    parser.add_argument("--host", help="address to bind (default: DEHAZE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: DEHAZE_PORT or 8000)")


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``DEHAZE_*`` variables, with the non-None ``overrides`` (from CLI flags) on top.

    Raises:
        CommandError: when the settings do not validate; the message lists every problem.
    """
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        raise CommandError(f"invalid settings: {problems}") from error


def prepare_artifact(settings: Settings) -> Path:
    """Export the TorchScript artifact the worker will load (``served_artifact``: the settings' device and precision
    resolved) when it is missing, was made from other weights or computes in another precision.

    Raises:
        CommandError: when the weights file does not exist.
    """
    weights = settings.weights_path()
    if not weights.is_file():
        raise CommandError(f"weights file not found: {weights} (set DEHAZE_WEIGHTS)")
    from model.export import ensure_artifact  # torch is imported only by commands that run the model
    from model.openmp import run_in_passing_thread
    from service.worker.runner import served_artifact

    artifact, dtype = served_artifact(settings)
    # an export traces the model: on a thread of its own, or its OpenMP team would outlive it (model.openmp)
    path = run_in_passing_thread(ensure_artifact, weights, artifact, dtype)
    logger.info("model artifact: %s (%s, from %s)", path, dtype, weights)
    return Path(path)


def serve_api(args: argparse.Namespace, prepare: Callable[[Settings], Settings]) -> int:
    """Serve the API with the settings of the environment and ``--host``/``--port``, until interrupted.

    Args:
        args: The parsed ``--host`` and ``--port``.
        prepare: Checks the settings for the command's arrangement and returns those to serve with; it raises
            CommandError for a problem the user can fix.

    Returns:
        0 after serving; 2 (the problem logged) when the settings are invalid or ``prepare`` refuses them.
    """
    try:
        settings = prepare(load_settings(host=args.host, port=args.port))
    except CommandError as error:
        logger.error("%s", error)
        return 2
    from service.main import create_app
    from service.server import serve

    serve(create_app(settings), settings)
    return 0
