"""Tiny inputs for the Colabator tests: real photos, a RESIDE folder, tiny checkpoints and a config file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from training.config import REPO_ROOT

TINY = REPO_ROOT / "training" / "configs" / "colabator_tiny.yaml"


def smooth_image(rng: np.random.Generator, h: int, w: int, haze: float = 0.0) -> np.ndarray:
    """A uint8 RGB image with structure at several scales, blended with grey haze by ``haze``."""
    coarse = rng.random((4, 4, 3))
    big = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR))
    img = 0.7 * big / 255.0 + 0.3 * rng.random((h, w, 3))
    img = (1 - haze) * img + haze * 0.9
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_real_photos(folder: Path, count: int = 3, seed: int = 0) -> Path:
    """``count`` hazy-looking photos of 64×48 px in a flat folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(smooth_image(rng, 48, 64, haze=0.5)).save(folder / f"photo{i}.png")
    return folder


def write_reside(root: Path, seed: int = 1) -> Path:
    """Two scenes of 40×40 px: GT, 16-bit depth and one hazy version each."""
    rng = np.random.default_rng(seed)
    for scene in ("1", "2"):
        for sub in ("GT", "hazy", "depth"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, 40, 40)).save(root / "GT" / f"{scene}.png")
        Image.fromarray(smooth_image(rng, 40, 40, haze=0.4)).save(root / "hazy" / f"{scene}_1.png")
        Image.fromarray(rng.integers(1000, 65535, (40, 40), dtype=np.uint16)).save(root / "depth" / f"{scene}.png")
    return root


def tiny_checkpoint(path: Path, variant: str) -> Path:
    """A randomly initialised checkpoint of ``dcmpnet_tiny`` or ``corun_tiny`` in our format."""
    torch.manual_seed(0)
    if variant.startswith("corun"):
        from model.corun import create_corun
        from model.corun_checkpoint import save_corun_checkpoint

        return save_corun_checkpoint(path, create_corun(variant), variant, {"note": "test init"})
    from model.checkpoint import save_checkpoint
    from model.dcmpnet import DCMPNet
    from model.depthnet import DepthNet
    from model.variants import get_variant

    spec = get_variant(variant)
    return save_checkpoint(path, DCMPNet(spec.phi), DepthNet(spec.psi), spec, {"note": "test init"})


def tiny_config(tmp: Path, variant: str, run: str = "run", **overrides: object) -> Path:
    """``colabator_tiny.yaml`` pointed at fresh tiny data and a tiny checkpoint of ``variant`` under ``tmp``."""
    real = tmp / "real"
    if not real.is_dir():
        write_real_photos(real)
    reside = tmp / "reside"
    if not reside.is_dir():
        write_reside(reside)
    init = tmp / f"{variant}.pt"
    if not init.is_file():
        tiny_checkpoint(init, variant)
    raw = yaml.safe_load(TINY.read_text())
    raw.update(init_from=str(init), run_dir=str(tmp / run))
    raw["real"]["roots"] = [str(real)]
    raw["synthetic"]["root"] = str(reside)
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    path = tmp / f"{run}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
