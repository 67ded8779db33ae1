"""``dehaze compare``: side-by-side pictures of several methods on the same photos, for model cards and reviews.

Reads the dehazed images that ``dehaze evaluate --save-images`` wrote (``<run>/images/<name>_dehazed.png``) for
each run, puts the input first and one labelled column per run, one row per photo, and writes a JPEG. Every tile
is resized to a common height, so photos of any size line up.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from service.codec import to_uint8
from training.data import list_images, load_rgb, resize_max_side

__all__ = ["add_arguments", "compose", "run"]

logger = logging.getLogger(__name__)

_LABEL_HEIGHT = 18
_GAP = 4


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
    try:
        image = compose(args.data, args.runs, args.labels, args.names, args.height, args.max_side)
    except (FileNotFoundError, ValueError) as err:
        logger.error("compare failed: %s", err)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, quality=88)
    logger.info("wrote %s (%d×%d)", args.out, *image.size)
    return 0


def _tile(arr: np.ndarray, height: int) -> Image.Image:
    img = Image.fromarray(to_uint8(arr))
    width = max(1, round(img.width * height / img.height))
    return img.resize((width, height), Image.Resampling.LANCZOS)


def _input_of(data: Path, name: str, max_side: int | None) -> np.ndarray:
    matches = [p for p in list_images(data, warn=False) if p.stem == name]
    if not matches:
        raise FileNotFoundError(f"no photo named {name!r} in {data}")
    return resize_max_side(load_rgb(matches[0]), max_side)


def compose(
    data: Path, runs: Sequence[Path], labels: Sequence[str], names: Sequence[str], height: int, max_side: int | None
) -> Image.Image:
    """The grid: rows = ``names``, columns = input then each run, with a title row.

    Raises:
        ValueError: ``labels`` and ``runs`` differ in length. FileNotFoundError: a photo or a run's image is missing.
    """
    if len(labels) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(labels)} labels")
    rows = []
    for name in names:
        tiles = [_tile(_input_of(data, name, max_side), height)]
        for run_dir in runs:
            path = run_dir / "images" / f"{name}_dehazed.png"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run `dehaze evaluate --save-images` for {run_dir}")
            tiles.append(_tile(load_rgb(path), height))
        rows.append(tiles)
    widths = [max(row[c].width for row in rows) for c in range(len(rows[0]))]
    canvas = Image.new(
        "RGB",
        (sum(widths) + _GAP * (len(widths) - 1), _LABEL_HEIGHT + len(rows) * (height + _GAP)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    x = 0
    for c, title in enumerate(["input", *labels]):
        draw.text((x + 4, 3), title, fill="black")
        for r, row in enumerate(rows):
            canvas.paste(row[c], (x, _LABEL_HEIGHT + r * (height + _GAP)))
        x += widths[c] + _GAP
    return canvas
