"""Distillation from the LKD-Net teacher: the data mixture, the label rule, the pseudo-depth and a CI smoke run
of the real training loop on the tiny variant (finite losses, both networks change, teacher targets where a pair
has no ground truth), plus an exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from training.config import REPO_ROOT, load_config
from training.pseudo_depth import pseudo_depth
from training.teachers.labels import LabelCache, choose_label
from training.trainer import Trainer

from .conftest import write_rgb

WEIGHTS = REPO_ROOT / "training" / "teachers" / "weights"
SMOKE = REPO_ROOT / "training" / "configs" / "tiny_smoke.yaml"


def _smooth_rgb(path: Path, rng: np.random.Generator, h: int, w: int) -> None:
    """A smooth random photo-like image (the teacher and FADE behave on it as on a photo, unlike on noise)."""
    base = rng.random((h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    img = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@pytest.fixture(scope="module")
def distill_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny NYU-layout, flat and real-photo folders."""
    root = tmp_path_factory.mktemp("distill_data")
    rng = np.random.default_rng(1)
    for scene in ("bathroom_0001", "bathroom_0002"):
        for frame in ("1", "5"):
            _smooth_rgb(root / "nyu" / scene / f"{frame}.jpg", rng, 80, 96)
            depth = (np.linspace(30, 200, 96)[None, :] * np.ones((80, 1))).astype(np.uint8)
            Image.fromarray(depth).save(root / "nyu" / scene / f"{frame}.png")
    for name in ("a", "b"):
        _smooth_rgb(root / "flat" / "train" / f"{name}.jpg", rng, 72, 64)
    for name in ("p1", "p2", "held"):
        _smooth_rgb(root / "real" / f"{name}.png", rng, 48, 48)
    write_rgb(root / "real" / "skip" / "x.png", rng)  # a sub-folder is not a photo of a flat folder
    return {k: root / k for k in ("nyu", "flat", "real")}


def _distill_config(tmp_path: Path, sots: Path, data: dict[str, Path], **overrides: object) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(run_dir=str(tmp_path / "run"), max_steps=2, val_every=2, threads=1)
    raw["data"].update(root=str(sots), val_scenes=["1402"], crop=48)
    raw["distill"] = {
        "teacher": str(WEIGHTS / "lkd-t-its.pth"),
        "real_teachers": {"lkd-t-ots": str(WEIGHTS / "lkd-t-ots.pth"), "lkd-t-its": str(WEIGHTS / "lkd-t-its.pth")},
        "pairs_weight": 0.25,
        "clear_sources": [
            {"root": str(data["nyu"]), "layout": "nyu", "weight": 0.25},
            {"root": str(data["flat"]), "layout": "flat", "weight": 0.25, "rotate": False},
        ],
        "real": {"roots": [str(data["real"])], "exclude_names": ["held"], "weight": 0.25, "max_side": 64},
        "length": 16,
        "scale_range": [1.0, 1.0],
        "cache_dir": str(tmp_path.parent / "teacher_cache"),
        "workers": 1,
    }
    raw.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_distillation_smoke_run(tmp_path: Path, sots_small: Path, distill_data: dict[str, Path]) -> None:
    trainer = Trainer(load_config(_distill_config(tmp_path, sots_small, distill_data)))
    mix = trainer.train_set
    items = [mix[i] for i in range(len(mix))]
    keys = {"hazy", "clear", "teacher", "teacher_w", "depth", "depth_w", "name"}
    assert all(set(it) == keys for it in items)

    # A real photo has no ground truth: its target is the label of a teacher, computed by the teacher now.
    real = [it for it in items if it["name"].endswith("_real")]
    assert real and not any(it["name"].startswith("held") for it in real)
    cache = LabelCache(tmp_path.parent / "teacher_cache", trainer.cfg.distill.real_teachers)
    for it in real:
        label = cache.real_label(distill_data["real"] / f"{it['name'].removesuffix('_real')}.png", 64)
        target = torch.from_numpy(label.label.transpose(2, 0, 1))
        assert label.teacher in {"lkd-t-ots", "lkd-t-its"}
        assert torch.allclose(it["clear"], target, atol=1e-6) or torch.allclose(it["clear"], target.flip(-1), atol=1e-6)
        assert it["teacher_w"].item() == 0.0
    # Pairs with ground truth carry the teacher's output as an extra target; synthetic haze has no teacher.
    pairs = [it for it in items if it["teacher_w"].item() > 0]
    assert pairs and all(not torch.equal(it["teacher"], it["clear"]) for it in pairs)
    # A clear photo without depth gets haze from a prior depth, but Ψ is not trained on it.
    flat = [it for it in items if it["name"].startswith(("a_syn", "b_syn"))]
    assert flat and all(it["depth_w"].max() == 0 for it in flat)

    phi0, psi0 = _state(trainer.phi), _state(trainer.psi)
    losses = trainer.train()
    assert trainer.step == 2 and all(np.isfinite(v) for v in losses.values())
    for before, net in ((phi0, trainer.phi), (psi0, trainer.psi)):
        assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if v.is_floating_point())


def test_resume_continues_exactly(tmp_path: Path, sots_small: Path, distill_data: dict[str, Path]) -> None:
    """Four steps at once equal two steps, a new process-like Trainer with --resume, and two more."""
    straight = tmp_path / "straight"
    straight.mkdir()
    t = Trainer(load_config(_distill_config(straight, sots_small, distill_data, max_steps=4, val_every=2)))
    t.train()
    split = tmp_path / "split"
    split.mkdir()
    cfg = _distill_config(split, sots_small, distill_data, max_steps=4, val_every=2, max_wall_seconds=1e-9)
    first = Trainer(load_config(cfg))
    first.train()  # stops (and saves) after its first step because of the wall-time limit
    assert first.step == 1
    cfg = _distill_config(split, sots_small, distill_data, max_steps=4, val_every=2)
    resumed = Trainer(load_config(cfg), resume=True)
    assert resumed.sched_phi.get_last_lr() == first.sched_phi.get_last_lr()
    resumed.train()
    assert resumed.step == 4
    for k, v in t.phi.state_dict().items():
        assert torch.equal(v, resumed.phi.state_dict()[k]), k
    for k, v in t.psi.state_dict().items():
        assert torch.equal(v, resumed.psi.state_dict()[k]), k


def test_pseudo_depth_recovers_true_depth_from_physics() -> None:
    gen = torch.Generator().manual_seed(0)
    clear = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=gen), size=(96, 128), mode="bilinear")
    depth = torch.linspace(0.1, 1.0, 128).view(1, 1, 1, 128).expand(1, 1, 96, 128)
    t = torch.exp(-1.2 * depth)
    hazy = clear * t + 0.9 * (1 - t)
    hazy[..., :4, :4] = 1.0  # the brightest haze patch, where the airlight rule looks
    pd = pseudo_depth(hazy, clear)
    ok = pd.confidence > 0.5
    assert ok.float().mean() > 0.5
    ratio = (pd.depth[ok] / depth[ok]).median()
    rel = ((pd.depth[ok] / ratio - depth[ok]).abs() / depth[ok]).mean()
    assert rel < 0.1


def test_label_rule_prefers_natural_tones_over_lower_fade() -> None:
    rng = np.random.default_rng(0)
    hazy = np.clip(0.55 + 0.15 * rng.standard_normal((64, 64, 3)), 0, 1).astype(np.float32)
    natural = np.clip((hazy - 0.4) * 1.6 + 0.4, 0, 1).astype(np.float32)
    crushed = natural.copy()
    crushed[:20] = 0.0  # 31 % of pixels near black: a lower haze score bought by crushing shadows
    assert choose_label(hazy, {"crushed": crushed, "natural": natural}) == "natural"
    # Between two natural labels, the one with less haze (lower FADE) wins.
    assert choose_label(hazy, {"weak": (0.5 * hazy + 0.5 * natural), "natural": natural}) == "natural"
