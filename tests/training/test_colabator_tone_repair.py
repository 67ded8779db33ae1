"""training.colabator.tone_repair, and the pool seeded with the EMA teacher's repaired labels first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.colabator_fixtures import tiny_config
from training.colabator.config import load_finetune_config
from training.colabator.finetune import EMA_SOURCE, Finetuner
from training.colabator.tone_repair import repair_tones
from training.metrics import tone_shift


def _photo(rng: np.random.Generator) -> np.ndarray:
    return (0.3 + 0.5 * rng.random((24, 32, 3))).astype(np.float32)


def test_black_pixels_go_back_to_the_photo_and_bright_ones_stay() -> None:
    hazy = _photo(np.random.default_rng(0))
    label = np.clip(hazy * 1.4 - 0.3, 0.0, 1.0)
    label[:8] = 0.0  # a crushed band
    out = repair_tones(hazy, label, shadow=0.1, strength=1.0, colour=False)
    np.testing.assert_allclose(out[:8], hazy[:8], atol=1e-6)  # black moves fully to the photo at strength 1
    bright = (label @ np.array([0.299, 0.587, 0.114])) >= 0.1
    np.testing.assert_array_equal(out[bright], label[bright])  # nothing above the shadow level moves
    half = repair_tones(hazy, label, shadow=0.1, strength=0.5, colour=False)
    np.testing.assert_allclose(half[:8], 0.5 * hazy[:8], atol=1e-6)
    assert tone_shift(hazy, label).crushed > 0.3 and tone_shift(hazy, out).crushed == 0.0


def test_a_colour_cast_is_removed_and_green_kept() -> None:
    hazy = _photo(np.random.default_rng(1))
    label = hazy.copy()
    label[..., 0] += 0.05  # a red cast
    label[..., 2] -= 0.03
    out = repair_tones(hazy, label, shadow=0.0, strength=1.0, colour=True)
    shift = tone_shift(hazy, out)
    assert abs(shift.rg_shift) < 1e-6 and abs(shift.bg_shift) < 1e-6
    np.testing.assert_array_equal(out[..., 1], label[..., 1])
    np.testing.assert_allclose(out, hazy, atol=1e-6)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one size"):
        repair_tones(np.zeros((4, 4, 3), np.float32), np.zeros((4, 5, 3), np.float32), 0.1, 1.0, True)


def test_the_pool_starts_from_the_ema_teachers_repaired_labels(tmp_path: Path) -> None:
    repair = {"shadow": 0.2, "strength": 1.0, "colour": True}
    cfg = tiny_config(tmp_path, "dcmpnet_tiny", pool={"seed_with_ema": True, "tone_repair": repair})
    ft = Finetuner(load_finetune_config(cfg))
    assert ft.pool.sources() == {EMA_SOURCE: 3} and ft.pool.offers == 3
    for photo in ft.photos:
        entry = ft.pool.get(photo.name)
        assert entry is not None and entry.step == 0
        expected = repair_tones(photo.image, ft.teacher_label(photo), 0.2, 1.0, True)
        assert not np.allclose(expected, ft.teacher_label(photo), atol=1e-3)  # the repair changed something
        np.testing.assert_allclose(entry.label.float().permute(1, 2, 0).numpy(), expected, atol=2e-3)
