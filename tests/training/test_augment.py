"""Paired augmentation: identical on every member, seeded, pure."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import augment_pair, center_crop, random_crop


def _stack(h: int = 40, w: int = 30) -> list[np.ndarray]:
    base = np.arange(h * w, dtype=np.float32).reshape(h, w, 1)
    return [np.concatenate([base, base + 1, base + 2], axis=2), base * 10, base.copy()]


def test_same_transform_on_pair_and_depth() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        hazy, clear, depth = augment_pair(_stack(), 16, rng)
        assert hazy.shape == (16, 16, 3) and clear.shape == (16, 16, 1) and depth.shape == (16, 16, 1)
        np.testing.assert_array_equal(hazy[..., :1], depth)
        np.testing.assert_array_equal(clear, depth * 10)


def test_seeded_and_pure() -> None:
    arrays = _stack()
    copy = [a.copy() for a in arrays]
    a = augment_pair(arrays, 16, np.random.default_rng(7))
    b = augment_pair(arrays, 16, np.random.default_rng(7))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(arrays, copy, strict=True):
        np.testing.assert_array_equal(x, y)
    outs = {augment_pair(arrays, 16, np.random.default_rng(s))[2].tobytes() for s in range(10)}
    assert len(outs) > 1


def test_all_rotations_and_flips_occur() -> None:
    arrays = [np.arange(4, dtype=np.float32).reshape(2, 2, 1)]
    rng = np.random.default_rng(0)
    seen = {tuple(augment_pair(arrays, None, rng)[0].ravel()) for _ in range(200)}
    assert len(seen) == 8  # the dihedral group of the square


def test_small_images_are_padded_and_mismatch_rejected() -> None:
    out = random_crop([np.ones((5, 6, 3), np.float32)], 8, np.random.default_rng(0))
    assert out[0].shape == (8, 8, 3)
    assert center_crop([np.ones((9, 9, 1))], 3)[0].shape == (3, 3, 1)
    with pytest.raises(ValueError, match="same H and W"):
        augment_pair([np.ones((4, 4, 3)), np.ones((5, 4, 1))], 2, np.random.default_rng(0))
