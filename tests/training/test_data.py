"""RESIDE pairing, unmatched-file errors, haze synthesis and the unpaired folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import SOTS, write_rgb
from training.data import (
    AIRLIGHT_RANGE,
    BETA_RANGE,
    DEFAULT_DEPTH_SCALE,
    HazeMix,
    PairedFolder,
    SyntheticHaze,
    UnpairedFolder,
    fit_depth_scale,
    load_depth,
    scan_pairs,
    synthesize,
)


def test_pairing_on_name_before_first_underscore(reside: Path) -> None:
    records = scan_pairs(reside)
    assert [r.name for r in records] == ["1_1_0.8", "1_5_0.8", "2_1_0.8", "2_5_0.8"]
    assert all(r.clear.name == f"{r.scene}.png" and r.depth.name == f"{r.scene}.png" for r in records)
    assert [r.scene for r in scan_pairs(reside, exclude=["2"])] == ["1", "1"]
    assert [r.scene for r in scan_pairs(reside, scenes=["2"])] == ["2", "2"]


def test_unmatched_files_are_named(reside: Path) -> None:
    rng = np.random.default_rng(1)
    write_rgb(reside / "hazy" / "9_3.png", rng)
    write_rgb(reside / "GT" / "7.png", rng)
    with pytest.raises(ValueError) as err:
        scan_pairs(reside)
    msg = str(err.value)
    assert "9_3.png" in msg and "7.png" in msg and "depth map" in msg


def test_missing_folder_and_unknown_scene(reside: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GT"):
        scan_pairs(tmp_path / "GT")
    with pytest.raises(ValueError, match="scenes not found"):
        scan_pairs(reside, scenes=["42"])


def test_items_are_tensors_in_range_and_reproducible(reside: Path) -> None:
    ds = PairedFolder(reside, crop=16, seed=5)
    item = ds[1]
    assert item["hazy"].shape == (3, 16, 16) and item["depth"].shape == (1, 16, 16)
    assert item["hazy"].dtype == torch.float32 and item["clear"].min() >= 0 and item["clear"].max() <= 1
    assert torch.equal(ds[1]["hazy"], item["hazy"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["hazy"], item["hazy"])
    full = PairedFolder(reside, crop=None, augment=False)[0]
    assert full["hazy"].shape == (3, 24, 20)


def test_depth_png_normalised(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    np.testing.assert_allclose(load_depth(tmp_path / "d.png")[..., 0], [[0.0, 1.0]])


def test_synthesis_ranges_and_model(reside: Path) -> None:
    ds = SyntheticHaze(reside, crop=8, seed=0, length=50)
    betas, airs = [], []
    for i in range(len(ds)):
        name = ds[i]["name"]
        betas.append(float(name.split("_b")[1].split("_")[0]))
        airs.append(float(name.split("_a")[1]))
    assert BETA_RANGE[0] <= min(betas) and max(betas) <= BETA_RANGE[1] and max(betas) - min(betas) > 0.6
    assert AIRLIGHT_RANGE[0] <= min(airs) and max(airs) <= AIRLIGHT_RANGE[1]
    clear = np.full((2, 2, 3), 0.2, np.float32)
    depth = np.array([[[0.0], [1.0]], [[0.5], [1.0]]], np.float32)
    hazy = synthesize(clear, depth, beta=1.0, airlight=0.9, depth_scale=1.0)
    np.testing.assert_allclose(hazy[0, 0], 0.2)  # depth 0: no haze
    t = np.exp(-1.0)
    np.testing.assert_allclose(hazy[0, 1], 0.2 * t + 0.9 * (1 - t), rtol=1e-6)


def test_mix_draws_both_kinds(reside: Path) -> None:
    mix = HazeMix(PairedFolder(reside, crop=8), SyntheticHaze(reside, crop=8, length=40), 0.5, length=40)
    kinds = {"_syn_" in mix[i]["name"] for i in range(40)}
    assert kinds == {True, False}


@pytest.mark.skipif(not SOTS.is_dir(), reason="shared dataset missing")
def test_depth_scale_matches_haze_params() -> None:
    assert fit_depth_scale(SOTS / "haze_params.json") == pytest.approx(DEFAULT_DEPTH_SCALE, abs=0.01)


def test_unpaired_skips_non_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    write_rgb(tmp_path / "a.png", rng, 40, 60)
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        ds = UnpairedFolder(tmp_path, max_side=30)
    assert len(ds) == 1 and "notes.txt" in caplog.text
    assert ds[0]["hazy"].shape == (3, 20, 30)
