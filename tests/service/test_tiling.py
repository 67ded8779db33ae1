"""Tiling geometry, padding and stitching: tiling then stitching with an identity model returns the input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import TooLargeError
from service.worker import tiling
from service.worker.plan import ImagePlan


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 150),
    width=st.integers(1, 150),
    tile=st.sampled_from([16, 32, 48]),
    overlap_fraction=st.floats(0.0, 0.45),
    multiple=st.sampled_from([1, 8, 16]),
)
def test_tiling_then_stitching_with_identity_returns_the_input(
    height: int, width: int, tile: int, overlap_fraction: float, multiple: int
) -> None:
    overlap = int(tile * overlap_fraction)
    image = np.random.default_rng(height * 1000 + width).random((height, width, 3), dtype=np.float32)
    plan = ImagePlan(image, tile, overlap, multiple)
    shapes = {p.shape for p in plan.pieces}
    assert len(shapes) == 1
    for piece in plan.pieces:
        padded = piece.pixels(image)
        assert padded.shape[:2] == piece.shape and piece.shape[0] % multiple == 0 and piece.shape[1] % multiple == 0
        plan.add(piece, padded, padded[:, :, :1])
    dehazed, depth = plan.outputs()
    np.testing.assert_allclose(dehazed, image, atol=1e-5)
    np.testing.assert_allclose(depth, image[:, :, 0], atol=1e-5)


def test_the_plan_counts_its_missing_pieces_and_refuses_to_stitch_a_skipped_one() -> None:
    image = np.zeros((40, 100, 3), np.float32)
    plan = ImagePlan(image, 32, 4, 8)
    assert plan.missing == len(plan.pieces) > 2 and not plan.done
    plan.skip()  # the first piece's forward failed
    for piece in plan.pieces[1:]:
        padded = piece.pixels(image)
        plan.add(piece, padded, padded[:, :, :1])
    assert plan.missing == 0 and plan.done
    with pytest.raises(ValueError, match=f"1 of {len(plan.pieces)} pieces have no output"):
        plan.outputs()


def test_tile_starts_cover_the_length_with_the_overlap() -> None:
    assert tiling.tile_starts(100, 100, 10) == [0]
    starts = tiling.tile_starts(1000, 512, 64)
    assert starts == [0, 448, 488]
    with pytest.raises(ValueError):
        tiling.tile_starts(100, 32, 16)


def test_blend_weights_ramp_linearly_and_stay_positive() -> None:
    weights = tiling.blend_weights(8, 8, overlap=3)
    np.testing.assert_allclose(weights[4, :4], [0.25, 0.5, 0.75, 1.0])
    assert weights.min() > 0


def test_a_seam_between_two_different_tiles_is_blended_linearly() -> None:
    stitcher = tiling.Stitcher(1, 12, 1, overlap=3)
    stitcher.add(tiling.Tile(0, 0, 1, 8), np.zeros((1, 8, 1), np.float32))
    stitcher.add(tiling.Tile(0, 4, 1, 8), np.ones((1, 8, 1), np.float32))
    row = stitcher.result()[0, :, 0]
    assert row[0] == 0 and row[-1] == 1
    assert np.all(np.diff(row) >= 0)  # a ramp, no jump back
    assert 0 < row[5] < row[6] < 1


def test_count_tiles_counts_the_planned_tiles() -> None:
    for height, width in ((1, 1), (640, 641), (1000, 3000), (4096, 17)):
        assert tiling.count_tiles(height, width, 512, 64) == len(tiling.plan_tiles(height, width, 512, 64))


def test_compute_pixels_counts_padded_tiles() -> None:
    assert tiling.compute_pixels(480, 620, 640, 64, 32) == 480 * 640
    assert tiling.compute_pixels(4096, 4096, 640, 64, 32) == 49 * 640 * 640
    assert tiling.compute_pixels(1_000_000, 1, 640, 64, 32) == 1736 * 640 * 32
    with pytest.raises(TooLargeError, match="pixels of model work"):
        tiling.check_compute(1_000_000, 1, 640, 64, 32, 2 * 16_777_216)
