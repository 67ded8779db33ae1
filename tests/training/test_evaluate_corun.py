"""``dehaze evaluate`` of a CORUN checkpoint: a SOTS folder (PSNR/SSIM/FADE and depth metrics of the
transmission-derived depth) and a flat folder of photos (FADE only), through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from commands.cli import main
from model.corun import create_corun
from model.corun_checkpoint import save_corun_checkpoint
from tests.training.conftest import write_rgb


@pytest.fixture(scope="module")
def corun_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("corun") / "corun_tiny.pt"
    return save_corun_checkpoint(path, create_corun("corun_tiny"), "corun_tiny", {})


def test_sots_folder_scores_image_and_transmission_depth(tmp_path: Path, sots_small: Path, corun_weights: Path) -> None:
    out = tmp_path / "sots"
    argv = ["evaluate", "--data", str(sots_small), "--weights", str(corun_weights), "--out", str(out)]
    assert main([*argv, "--limit", "2", "--device", "cpu", "--save-images"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "corun" and metrics["weights"] == str(corun_weights) and metrics["n_images"] == 2
    assert np.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] <= 1 and metrics["fade_out"] > 0
    assert metrics["depth_absrel"] > 0 and 0 <= metrics["depth_delta1"] <= 1
    assert "baseline_depth_absrel" in metrics  # DCP's depth as the reference point, as for DCMPNet
    depth = np.asarray(Image.open(out / "images" / "1400_5_depth.png"))
    assert depth.shape == (96, 96) and depth.max() > 0


def test_flat_folder_of_photos_scores_fade(tmp_path: Path, corun_weights: Path) -> None:
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    write_rgb(photos / "a.png", rng, 40, 64)
    write_rgb(photos / "b.png", rng, 31, 45)
    out = tmp_path / "flat"
    assert main(["evaluate", "--data", str(photos), "--weights", str(corun_weights), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "corun" and metrics["n_images"] == 2 and metrics["psnr"] is None
    assert metrics["fade_in"] > 0 and metrics["fade_out"] > 0 and "depth_absrel" not in metrics
    with (out / "per_image.csv").open() as f:
        assert [(r["name"], r["width"]) for r in csv.DictReader(f)] == [("a", "64"), ("b", "45")]
