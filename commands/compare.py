"""``dehaze compare``: one picture of several ``dehaze evaluate --save-images`` runs side by side."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "side-by-side pictures of several evaluated methods on the same photos"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``dehaze compare`` options."""
    parser.add_argument("--data", required=True, type=Path, help="the folder of input photos that was evaluated")
    parser.add_argument("--runs", required=True, nargs="+", type=Path, help="`dehaze evaluate --save-images` outputs")
    parser.add_argument("--labels", required=True, nargs="+", help="one column title per run")
    parser.add_argument("--names", required=True, nargs="+", help="photo stems, one row each")
    parser.add_argument("--height", type=int, default=240, help="tile height in pixels (default: 240)")
    parser.add_argument("--max-side", type=int, default=None, help="the --max-side the runs were evaluated with")
    parser.add_argument("--out", required=True, type=Path, help="output JPEG")


def run(args: argparse.Namespace) -> int:
    """Writes the comparison; returns 1 (with the reason logged) when an input is missing."""
    from training.compare import compose

    try:
        image = compose(args.data, args.runs, args.labels, args.names, args.height, args.max_side)
    except (FileNotFoundError, ValueError) as err:
        logger.error("compare failed: %s", err)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, quality=88)
    logger.info("wrote %s (%d×%d)", args.out, *image.size)
    return 0
