"""``training/gpu_train.sh --dry-run``: the one-chance GPU training script runs every step on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from model.checkpoint import load_checkpoint
from tests.training.conftest import SOTS
from training.config import REPO_ROOT, load_config
from training.corun_config import load_corun_config
from training.gpu_pack import pack


def _dry_run(tmp_path: Path, *options: str) -> Path:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        ["bash", "training/gpu_train.sh", "--dry-run", *options],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    out = tmp_path / "out" / "train"
    assert proc.returncode == 0, (proc.stderr, (out / "train.log").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["fit_steps_to_wall"] and config["max_steps"] not in (3000, 20000)  # re-fitted from provisional
    assert log[-1]["step"] == config["max_steps"] or "max_wall_seconds reached" in (out / "train.log").read_text()
    return out


@pytest.mark.skipif(not SOTS.is_dir(), reason="shared dataset not found")
def test_dry_run_trains_fitted_to_its_budget_and_releases(tmp_path: Path) -> None:
    out = _dry_run(tmp_path)
    for name in ("best", "last"):
        ckpt = load_checkpoint(out / f"dcmpnet_small_gpu_{name}.pt")
        assert ckpt.variant.name == "dcmpnet_tiny" and "opt_phi" not in (ckpt.raw.get("extra") or {})


@pytest.mark.skipif(not SOTS.is_dir(), reason="shared dataset not found")
def test_corun_dry_run_pretrains_fitted_to_its_budget_and_releases(tmp_path: Path) -> None:
    from model.corun_checkpoint import load_corun_checkpoint

    out = _dry_run(tmp_path, "--model", "corun_small")
    assert load_corun_config(out / "config.yaml").variant == "corun_tiny"
    for name in ("best", "last"):
        ckpt = load_corun_checkpoint(out / f"corun_small_gpu_{name}.pt")
        assert ckpt.variant == "corun_tiny" and "opt" not in (ckpt.raw.get("extra") or {})


def test_pack_keeps_validation_exact_and_training_clear_only(tmp_path: Path) -> None:
    if not SOTS.is_dir():
        pytest.skip("shared dataset not found")
    pack(SOTS, tmp_path / "pack", ["1430"], ["1430", "1431", "1432", "1433", "1434"], max_train_scenes=2)
    train = tmp_path / "pack" / "sots-train-clear"
    assert sorted(p.name for p in (train / "GT").iterdir()) == ["1400.jpg", "1401.jpg"]
    assert not (train / "hazy").exists()
    assert (train / "depth" / "1400.png").read_bytes() == (SOTS / "depth" / "1400.png").read_bytes()
    val = tmp_path / "pack" / "sots-val"
    assert sorted(p.name for p in (val / "hazy").iterdir()) == [f"1430_{k}.webp" for k in (1, 3, 5, 7, 9)]
    assert (val / "GT" / "1430.webp").read_bytes() == (SOTS / "GT" / "1430.webp").read_bytes()
    # The tests' fixture scenes, cropped as the fixture crops them (pixel-exact: lossless WebP, 16-bit PNG).
    fixture = tmp_path / "pack" / "sots-fixture"
    with Image.open(SOTS / "depth" / "1401.png") as full, Image.open(fixture / "depth" / "1401.png") as small:
        left, top = (full.width - 96) // 2, (full.height - 96) // 2
        assert np.array_equal(np.asarray(full.crop((left, top, left + 96, top + 96))), np.asarray(small))
    with Image.open(SOTS / "hazy" / "1402_5.webp") as full, Image.open(fixture / "hazy" / "1402_5.webp") as small:
        left, top = (full.width - 96) // 2, (full.height - 96) // 2
        assert np.array_equal(np.asarray(full.crop((left, top, left + 96, top + 96))), np.asarray(small))


def test_gpu_corun_config_validates() -> None:
    cfg = load_corun_config(REPO_ROOT / "training" / "configs" / "gpu_corun_small.yaml")
    assert cfg.fit_steps_to_wall and cfg.device == "cuda" and cfg.variant == "corun_small"
    assert [s.root for s in cfg.data.sources] == [".gpu_data/sots-train-clear"]
    assert cfg.data.val_root == ".gpu_data/sots-val" and cfg.init_from is None


def test_unknown_model_is_refused() -> None:
    command = ["bash", "training/gpu_train.sh", "--model", "corun", "--dry-run"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "dcmpnet_small or corun_small" in proc.stderr


def test_gpu_config_validates() -> None:
    cfg = load_config(REPO_ROOT / "training" / "configs" / "gpu_small.yaml")
    assert cfg.fit_steps_to_wall and cfg.device == "cuda" and cfg.distill is not None
    assert cfg.distill.pairs_weight == 0 and cfg.init_from == "model/weights/dcmpnet_small.pt"
