"""Colabator's parts: the trust map's direction, FADE's block scores, and crops that keep photo and label aligned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.training.colabator_fixtures import tiny_config, write_real_photos
from training.colabator.config import StrongAugConfig, load_finetune_config
from training.colabator.finetune import Finetuner
from training.colabator.pool import PoolEntry
from training.colabator.real_photos import load_real_photos
from training.colabator.strong_augment import strong_augment
from training.colabator.trust import trust_grid, trust_map, unit_weight
from training.quality import FadeScorer


class LeftClearRightHazy:
    """A fake block scorer: blocks in the left half score 0.2, the right half 3.0 (lower is better)."""

    name = "fade"
    higher_is_better = False

    def __call__(self, rgb: np.ndarray) -> float:
        return 1.0

    def block_scores(self, rgb: np.ndarray, block: int) -> np.ndarray:
        cols = -(-rgb.shape[1] // block)
        return np.where(np.arange(cols) < cols // 2, 0.2, 3.0)[None].repeat(-(-rgb.shape[0] // block), 0)


def test_hazier_blocks_get_less_trust() -> None:
    grid = trust_grid(np.zeros((32, 64, 3), np.float32), [LeftClearRightHazy()], 16, {"fade": 1.0}, floor=0.1)
    assert grid.shape == (2, 4)
    np.testing.assert_allclose(grid[:, :2], 1 / 1.2, rtol=1e-6)
    np.testing.assert_allclose(grid[:, 2:], 0.25, rtol=1e-6)
    full = trust_map(torch.from_numpy(grid), 32, 64)
    assert full.shape == (1, 32, 64) and full[0, :, :8].mean() > full[0, :, -8:].mean()
    assert unit_weight(np.array([0.0, 1.0, np.nan]), False, 1.0).tolist() == [1.0, 0.5, 0.0]
    assert unit_weight(np.array([0.0, 1.0]), True, 1.0).tolist() == [0.0, 0.5]


def test_fade_block_scores_find_the_hazy_half() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((64, 128, 3)).astype(np.float32)
    img[:, 64:] = 0.75 + 0.1 * img[:, 64:]  # right half: low contrast, bright (haze-like)
    blocks = FadeScorer().block_scores(img, 32)
    assert blocks.shape == (2, 4)
    assert blocks[:, 2:].min() > blocks[:, :2].max()


def test_strong_augment_is_seeded_and_changes_the_photo() -> None:
    img = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    cfg = StrongAugConfig(blur_p=1.0, noise_p=1.0, jpeg_p=1.0)
    a = strong_augment(img, np.random.default_rng(5), cfg)
    b = strong_augment(img, np.random.default_rng(5), cfg)
    assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.float32
    assert np.abs(a - img).mean() > 0.01 and a.min() >= 0.0 and a.max() <= 1.0


def test_crops_cut_the_label_trust_and_depth_where_they_cut_the_photo(tmp_path: Path) -> None:
    """With a label equal to the photo and no photometric change, the student's input equals its label crop."""
    off = {"brightness": 0, "contrast": 0, "saturation": 0, "gamma": 0, "blur_p": 0, "noise_p": 0, "jpeg_p": 0}
    ft = Finetuner(load_finetune_config(tiny_config(tmp_path, "dcmpnet_tiny", strong=off)))
    photo = ft.photos[0]
    h, w = photo.image.shape[:2]
    as_chw = torch.from_numpy(photo.image.transpose(2, 0, 1).copy())
    grid = torch.linspace(0, 1, 12).view(3, 4)  # a trust grid that varies across the photo
    ramp = torch.linspace(0, 1, w).expand(1, h, w).clone()  # a "depth" that says which column a pixel came from
    ft.pool.entries[photo.name] = PoolEntry(as_chw.half(), {"fade": 0.0}, "test", 0, grid, ramp.half(), ramp.half())
    full_trust = trust_map(grid, h, w)
    for seed in range(4):
        item = ft._real_item(photo, np.random.default_rng(seed))
        assert item["strong"].shape == (3, 32, 32)
        torch.testing.assert_close(item["strong"], item["label"], atol=2e-3, rtol=0)  # float16 label
        # The depth crop says which columns were taken (and whether they were flipped); the trust crop must match.
        cols = (item["depth"][0, 0] * (w - 1)).round().long()
        rows_match = [
            any(torch.allclose(item["trust"][0, r], full_trust[0, top, cols], atol=1e-5) for top in range(h))
            for r in range(32)
        ]
        assert all(rows_match)


def test_a_photo_subset_is_seeded_nested_and_keeps_the_held_out_photos_out(tmp_path: Path) -> None:
    folder = write_real_photos(tmp_path / "real", count=8)
    names = sorted(p.stem for p in folder.iterdir())
    held = names[:1]

    def chosen(count: int | None, seed: int = 0) -> list[str]:
        return [p.name for p in load_real_photos([str(folder)], held, 32, count, seed)]

    every = chosen(None)
    assert every == names[1:]
    two, four = chosen(2), chosen(4)
    assert len(two) == 2 and len(four) == 4 and set(two) <= set(four) <= set(every)
    assert two == sorted(two) and chosen(2) == two  # sorted, and the same subset again
    assert any(chosen(4, seed) != four for seed in range(1, 5))  # another subset seed, another subset
    assert chosen(50) == every
