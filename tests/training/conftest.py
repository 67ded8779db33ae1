"""Shared fixtures: tiny RESIDE-layout folders built from the shared SOTS scenes or from random pixels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# DEHAZE_TEST_SOTS: another folder with scenes 1400-1402 (GT, hazy level 5, depth), e.g. the GPU run's data pack
# (training/gpu_pack.py), where ../shared does not exist.
SOTS = Path(os.environ.get("DEHAZE_TEST_SOTS") or REPO / "../shared/datasets/sots-indoor-train").resolve()


def write_rgb(path: Path, rng: np.random.Generator, h: int = 24, w: int = 20) -> None:
    """Writes a random RGB PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_depth(path: Path, rng: np.random.Generator, h: int = 24, w: int = 20) -> None:
    """Writes a random 16-bit depth PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(1, 65536, (h, w), dtype=np.uint16)).save(path)


@pytest.fixture
def reside(tmp_path: Path) -> Path:
    """A RESIDE-layout folder with scenes 1 and 2, two hazy levels each, and depth."""
    rng = np.random.default_rng(0)
    for scene in ("1", "2"):
        write_rgb(tmp_path / "GT" / f"{scene}.png", rng)
        write_depth(tmp_path / "depth" / f"{scene}.png", rng)
        for k in (1, 5):
            write_rgb(tmp_path / "hazy" / f"{scene}_{k}_0.8.png", rng)
    return tmp_path


@pytest.fixture(scope="session")
def sots_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three SOTS scenes (1400-1402, one hazy level each, center 96×96 crops) in RESIDE layout with depth."""
    if not SOTS.is_dir():
        pytest.skip(f"shared dataset not found at {SOTS}")
    root = tmp_path_factory.mktemp("sots3")
    for scene in ("1400", "1401", "1402"):
        for sub, name in (("GT", f"{scene}.webp"), ("hazy", f"{scene}_5.webp"), ("depth", f"{scene}.png")):
            with Image.open(SOTS / sub / name) as im:
                w, h = im.size
                box = ((w - 96) // 2, (h - 96) // 2, (w - 96) // 2 + 96, (h - 96) // 2 + 96)
                out = root / sub / (Path(name).stem + ".png")
                out.parent.mkdir(parents=True, exist_ok=True)
                im.crop(box).save(out)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, sots_small: Path) -> Path:
    """``last.pt`` of a two-step run of the real training loop (tiny variant, ``tiny_smoke.yaml`` on sots_small)."""
    import yaml

    from training.config import REPO_ROOT, load_config
    from training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("tiny_run")
    raw = yaml.safe_load((REPO_ROOT / "training" / "configs" / "tiny_smoke.yaml").read_text())
    raw.update(run_dir=str(run_dir), max_steps=2, val_every=2)
    raw["data"].update(root=str(sots_small), val_scenes=["1402"])
    path = run_dir / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    Trainer(load_config(path)).train()
    return run_dir / "last.pt"
