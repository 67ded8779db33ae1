"""Side-by-side pictures of several methods on the same photos, for model cards and reviews (``dehaze compare``).

Reads the dehazed images that ``dehaze evaluate --save-images`` wrote (``<run>/images/<name>_dehazed.png``) for
each run, puts the input first and one labelled column per run, one row per photo, and writes a JPEG. Every tile
is resized to a common height, so photos of any size line up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from service.codec import to_uint8
from training.data import list_images, load_rgb, resize_max_side

__all__ = ["compose"]

_LABEL_HEIGHT = 18
_GAP = 4


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
