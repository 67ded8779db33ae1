"""Pieces shared by the service commands: settings from the environment with CLI overrides, the model artifact."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.config import Settings

__all__ = ["CommandError", "add_server_arguments", "load_settings", "prepare_artifact"]

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A problem the user can fix (bad settings, missing files); printed without a traceback."""


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
    """Export the TorchScript artifact from the weights when it is missing or older than them.

    Raises:
        CommandError: when the weights file does not exist.
    """
    weights, artifact = settings.weights_path(), settings.artifact_path()
    if not weights.is_file():
        raise CommandError(f"weights file not found: {weights} (set DEHAZE_WEIGHTS)")
    from model.export import ensure_artifact  # torch is imported only by commands that run the model

    path = ensure_artifact(weights, artifact)
    logger.info("model artifact: %s (from %s)", path, weights)
    return Path(path)
