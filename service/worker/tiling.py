"""Tiling geometry of the worker: tile offsets, bucket shapes and mirror padding, the model work an image costs, and
the linear blending that stitches tile outputs back into one image.

Pure numpy functions on H×W×C arrays, without per-request state (``Stitcher`` lives for one image). The API prices a
request with ``check_compute`` before it is queued, so that the price is the worker's own arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.errors import TooLargeError

__all__ = [
    "Stitcher",
    "Tile",
    "blend_weights",
    "bucket_shape",
    "check_compute",
    "compute_pixels",
    "count_tiles",
    "pad_to",
    "plan_tiles",
    "tile_starts",
]


@dataclass(frozen=True)
class Tile:
    """A region of an image: rows ``y:y+h``, columns ``x:x+w``."""

    y: int
    x: int
    h: int
    w: int


def bucket_shape(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The shape an item is padded to so that it shares a batch with its peers: each side up to ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad H×W×C (bottom and right) to ``height``×``width`` by mirroring; crop back with ``[:h, :w]``.

    Mirroring (not zeros) keeps the padded border looking like the image, so the network's output near the real
    border is not pulled towards a black frame.
    """
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad {image.shape[:2]} to the smaller {(height, width)}")
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap`` shared pixels.

    The stride is ``tile - overlap``; the last tile is moved back to end flush with the image (so its overlap with
    its neighbour may be larger). A length up to ``tile`` gives the single start 0.
    """
    if tile < 1 or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= 2*overlap < tile, got tile={tile} overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def count_tiles(height: int, width: int, tile_size: int, overlap: int) -> int:
    """How many tiles ``plan_tiles`` cuts an image into, without listing them."""
    return len(tile_starts(height, tile_size, overlap)) * len(tile_starts(width, tile_size, overlap))


def plan_tiles(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """The tiles covering an image; all have the same shape (``tile_size`` or the image's side when smaller)."""
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    return [
        Tile(y, x, tile_h, tile_w)
        for y in tile_starts(height, tile_size, overlap)
        for x in tile_starts(width, tile_size, overlap)
    ]


def compute_pixels(height: int, width: int, tile_size: int, overlap: int, multiple: int) -> int:
    """Pixels the model computes for an image: its tiles, each padded to its bucket (see ``plan_tiles``).

    About 1.1-1.3 × height × width for large photos; far more for very thin images, whose short side is padded up
    to ``multiple`` in every one of their many tiles (a 1×1,000,000 image computes 32 × 1,000,000 pixels).
    """
    padded_h, padded_w = bucket_shape(min(tile_size, height), min(tile_size, width), multiple)
    return count_tiles(height, width, tile_size, overlap) * padded_h * padded_w


def check_compute(height: int, width: int, tile_size: int, overlap: int, multiple: int, budget: int) -> int:
    """The pixels the model computes for an image (``compute_pixels``), refused above ``budget``.

    Raises:
        TooLargeError: the image needs more model work than ``budget`` pixels (HTTP 413).
    """
    needed = compute_pixels(height, width, tile_size, overlap, multiple)
    if needed > budget:
        raise TooLargeError(
            f"a {width}x{height} image needs {needed} pixels of model work (tiles padded to {multiple}); "
            f"the limit per request is {budget}"
        )
    return needed


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Linear blending weights of one tile, H×W float32 in (0, 1].

    Weights ramp up linearly over ``overlap`` pixels from each side and are 1 inside; they never reach 0, so the
    normalised sum in ``Stitcher`` is exact at image borders (covered by one tile) too.
    """

    def ramp(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float32)
        return np.minimum(1.0, (distance + 1.0) / (overlap + 1.0)).astype(np.float32)

    return np.outer(ramp(height), ramp(width))


class Stitcher:
    """Accumulates blended tile outputs of one image into a full-size result (one instance per image)."""

    def __init__(self, height: int, width: int, channels: int, overlap: int) -> None:
        self._sum = np.zeros((height, width, channels), dtype=np.float32)
        self._weight = np.zeros((height, width, 1), dtype=np.float32)
        self._overlap = overlap

    def add(self, tile: Tile, output: np.ndarray) -> None:
        """Blend one tile's output (h×w×C, already cropped to the tile) into the result."""
        if output.shape[:2] != (tile.h, tile.w):
            raise ValueError(f"tile output {output.shape[:2]} does not match the tile {(tile.h, tile.w)}")
        weights = blend_weights(tile.h, tile.w, self._overlap)[:, :, None]
        self._sum[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] += output * weights
        self._weight[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] += weights

    def result(self) -> np.ndarray:
        """The stitched H×W×C image; raises ValueError if some pixel was covered by no tile."""
        if not (self._weight > 0).all():
            raise ValueError("some pixels were covered by no tile")
        return self._sum / self._weight
