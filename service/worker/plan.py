"""How one image becomes work items of fixed shape, and how their outputs become the image's outputs again.

An image up to ``tile_size`` on each side is one item, padded (mirrored) to the next multiple of
``bucket_multiple`` so it can share a forward with same-bucket peers. A larger image is cut into tiles of
``tile_size`` (or its own side, when that side is shorter) overlapping by ``tile_overlap`` pixels; all its tiles
share one bucket, and their outputs are blended linearly in the overlaps. Items are padded only when a forward
needs them (``Piece.pixels``), so a batch holds at most ``max_batch_size`` padded copies at a time.

The plan keeps the one count of pieces still missing: a piece stops missing when its output is added, or when it
is skipped because its forward (or an earlier one of its image) failed. The worker reads it to know when a job is
done, and how many tiles it did not compute when it abandons a job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.worker.tiling import Stitcher, Tile, bucket_shape, pad_to, plan_tiles

__all__ = ["ImagePlan", "Piece"]


@dataclass(frozen=True)
class Piece:
    """One work item: a region of an image and the padded shape it is computed at."""

    tile: Tile
    shape: tuple[int, int]

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """The region of ``image`` (H×W×3) padded to ``shape``."""
        region = image[self.tile.y : self.tile.y + self.tile.h, self.tile.x : self.tile.x + self.tile.w]
        return pad_to(region, *self.shape)


class ImagePlan:
    """The pieces of one image and the accumulators of its outputs (one instance per image)."""

    def __init__(self, image: np.ndarray, tile_size: int, tile_overlap: int, bucket_multiple: int) -> None:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
        self.image = image
        height, width = image.shape[:2]
        tiles = plan_tiles(height, width, tile_size, tile_overlap)
        shape = bucket_shape(tiles[0].h, tiles[0].w, bucket_multiple)
        self.pieces = [Piece(tile, shape) for tile in tiles]
        self._dehazed = Stitcher(height, width, 3, tile_overlap)
        self._depth = Stitcher(height, width, 1, tile_overlap)
        self._missing = len(self.pieces)
        self._skipped = 0

    @property
    def missing(self) -> int:
        """Pieces neither added nor skipped yet."""
        return self._missing

    @property
    def done(self) -> bool:
        """True once every piece has been added or skipped."""
        return self._missing == 0

    def add(self, piece: Piece, dehazed: np.ndarray, depth: np.ndarray) -> None:
        """Blend one piece's outputs (padded-shape h×w×3 and h×w×1 arrays; cropped here)."""
        tile = piece.tile
        self._dehazed.add(tile, dehazed[: tile.h, : tile.w])
        self._depth.add(tile, depth[: tile.h, : tile.w])
        self._missing -= 1

    def skip(self) -> None:
        """Count one piece as finished without an output (it failed); ``outputs`` then refuses to stitch."""
        self._skipped += 1
        self._missing -= 1

    def outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The stitched dehazed image H×W×3 and depth map H×W, both clipped to [0, 1]."""
        if not self.done or self._skipped:
            raise ValueError(f"{self._missing + self._skipped} of {len(self.pieces)} pieces have no output")
        dehazed = np.clip(self._dehazed.result(), 0.0, 1.0)
        depth = np.clip(self._depth.result()[:, :, 0], 0.0, 1.0)
        return dehazed, depth
