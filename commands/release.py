"""``dehaze release``: a training checkpoint stripped to shippable weights with provenance (``training.release``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "strip a training checkpoint down to shippable weights with provenance"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``dehaze release`` options."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (best.pt or last.pt)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the shippable weights")
    parser.add_argument(
        "--phi-from-dehazeformer",
        type=Path,
        default=None,
        metavar="FILE",
        help="ship Φ as the warm start from this DehazeFormer .pth, with the checkpoint's trained Ψ",
    )
    parser.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra metadata to record, e.g. --meta hardware='2-core CPU' (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the release from parsed arguments; returns 1 (the reason logged) when it fails."""
    from training.release import release

    try:
        release(args.checkpoint, args.out, dict(_pair(m) for m in args.meta), args.phi_from_dehazeformer)
    except (ValueError, FileNotFoundError) as err:
        logger.error("release failed: %s", err)
        return 1
    return 0


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--meta expects KEY=VALUE, got {text!r}")
    return key, value
