"""A few steps of the REAL training loop with the tiny variant on 32×32 crops of 3 SOTS scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from commands.cli import main as dehaze
from commands.overrides import parse_overrides
from training.config import REPO_ROOT, load_config
from training.trainer import Trainer

SMOKE = REPO_ROOT / "training" / "configs" / "tiny_smoke.yaml"


def _config_file(tmp_path: Path, data: Path, **overrides: object) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["run_dir"] = str(tmp_path / "run")
    raw["data"].update(root=str(data), val_scenes=["1402"])
    raw.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


def test_alternating_steps_checkpoint_and_resume(tmp_path: Path, sots_small: Path) -> None:
    from model.checkpoint import load_checkpoint

    cfg_path = _config_file(tmp_path, sots_small)
    trainer = Trainer(load_config(cfg_path))
    phi0, psi0 = _params(trainer.phi), _params(trainer.psi)
    losses = trainer.train()
    assert trainer.step == 3 and set(losses) == {"depth", "dehaze", "unet", "depth_consistency"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert _changed(phi0, trainer.phi) and _changed(psi0, trainer.psi)

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3]
    assert {"psnr", "ssim", "losses", "elapsed"} <= set(log[0]) and set(log[0]["losses"]) == set(losses)
    assert (run / "best.pt").is_file() and (run / "config.yaml").is_file()

    ckpt = load_checkpoint(run / "last.pt")
    for k, v in trainer.phi.state_dict().items():
        assert torch.equal(ckpt.phi.state_dict()[k], v), k
    extra = ckpt.raw["extra"]
    assert extra["step"] == 3 and {"opt_phi", "opt_psi", "sched_phi", "sched_psi", "scaler", "config"} <= set(extra)

    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(load_config(cfg_path))
    cfg_path = _config_file(tmp_path, sots_small, max_steps=4)
    assert dehaze(["train", "--config", str(cfg_path), "--resume"]) == 0
    assert load_checkpoint(run / "last.pt").raw["extra"]["step"] == 4
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [2, 3, 4]


def test_joint_formulation_updates_both(tmp_path: Path, sots_small: Path) -> None:
    cfg = load_config(_config_file(tmp_path, sots_small, formulation="joint", max_steps=1, val_every=1))
    trainer = Trainer(cfg)
    phi0, psi0 = _params(trainer.phi), _params(trainer.psi)
    losses = trainer.train()
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert _changed(phi0, trainer.phi) and _changed(psi0, trainer.psi)


def test_set_overrides_the_config_from_the_command_line(tmp_path: Path, sots_small: Path) -> None:
    assert parse_overrides(["formulation=joint", "data.crop=48", "optim.betas=[0.5, 0.9]"]) == {
        "formulation": "joint",
        "data": {"crop": 48},
        "optim": {"betas": [0.5, 0.9]},
    }
    for bad in ("formulation", "=x", "data..crop=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_overrides([bad])
    run_dir = tmp_path / "joint_run"
    argv = ["train", "--config", str(_config_file(tmp_path, sots_small)), "--set", "formulation=joint"]
    assert dehaze([*argv, "--set", f"run_dir={run_dir}", "--set", "max_steps=1", "--set", "val_every=1"]) == 0
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["formulation"] == "joint" and written["max_steps"] == 1


def test_config_rejects_unknown_keys(tmp_path: Path, sots_small: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="lr_typo"):
        load_config(_config_file(tmp_path, sots_small), overrides={"optim": {"lr_typo": 1}})
    with pytest.raises(ValidationError, match="variant"):
        load_config(_config_file(tmp_path, sots_small), overrides={"variant": "nope"})
    with pytest.raises(ValidationError, match="both val_scenes and test_scenes"):
        load_config(_config_file(tmp_path, sots_small), overrides={"data": {"test_scenes": ["1402"]}})


def test_test_scenes_are_kept_out_of_training(tmp_path: Path, sots_small: Path) -> None:
    split = {"data": {"test_scenes": ["1401"], "batch_size": 1}}
    cfg = load_config(_config_file(tmp_path, sots_small), overrides=split)
    trainer = Trainer(cfg)
    seen = {trainer.train_set[i]["name"].split("_")[0] for i in range(len(trainer.train_set))}
    assert "1401" not in seen and "1402" not in seen and seen


def test_shipped_configs_validate() -> None:
    for name in ("small_cpu.yaml", "shipped_small.yaml", "paper.yaml", "tiny_smoke.yaml", "distill_small.yaml"):
        cfg = load_config(REPO_ROOT / "training" / "configs" / name)
        assert cfg.data.val_scenes
    small = load_config(REPO_ROOT / "training" / "configs" / "small_cpu.yaml")
    assert small.variant == "dcmpnet_small" and small.data.val_scenes == ["1430", "1431"]
    assert small.data.test_scenes == ["1432", "1433", "1434"]
    paper = load_config(REPO_ROOT / "training" / "configs" / "paper.yaml")
    assert (paper.variant, paper.data.crop, paper.data.batch_size, paper.optim.lr_phi) == ("dcmpnet", 256, 8, 1e-4)


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_alternating_steps_are_isolated(tmp_path: Path, sots_small: Path) -> None:
    """The Ψ step leaves Φ without gradients; the Φ step (Ψ frozen) leaves Ψ's weights as the Ψ step set them."""
    trainer = Trainer(load_config(_config_file(tmp_path, sots_small)))
    for m in (trainer.phi, trainer.psi, trainer.perc_d, trainer.perc_e):
        m.zero_grad(set_to_none=True)
    seen: dict[str, object] = {}
    psi_step, phi_step = trainer.opt_psi.step, trainer.opt_phi.step

    def after_psi_step(*args: object, **kwargs: object) -> object:
        seen["phi_grads"] = [p.grad for p in (*trainer.phi.parameters(), *trainer.perc_e.parameters())]
        seen["perc_d_grad"] = any(p.grad is not None for p in trainer.perc_d.parameters())
        result = psi_step(*args, **kwargs)
        seen["psi"] = _params(trainer.psi)
        return result

    def before_phi_step(*args: object, **kwargs: object) -> object:
        seen["perc_e_grad"] = any(p.grad is not None for p in trainer.perc_e.parameters())
        return phi_step(*args, **kwargs)

    trainer.opt_psi.step, trainer.opt_phi.step = after_psi_step, before_phi_step
    batch = next(trainer._batches())
    trainer.train_step(batch)
    assert all(g is None for g in seen["phi_grads"]) and seen["perc_d_grad"] and seen["perc_e_grad"]
    assert not _changed(seen["psi"], trainer.psi)
    assert all(p.requires_grad for p in trainer.psi.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_mixed_precision(tmp_path: Path, sots_small: Path, amp: str) -> None:
    cfg = load_config(_config_file(tmp_path, sots_small, device="cuda"), overrides={"optim": {"amp": amp}})
    trainer = Trainer(cfg)
    losses = trainer.train()
    assert trainer.step == 3 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_wall_time_limit_and_perceptual_term(
    tmp_path: Path, sots_small: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A VGG weights file turns the Eq. 11 perceptual term on; max_wall_seconds stops (and saves) early."""
    from training.vgg import VGG19Features

    vgg = tmp_path / "vgg.pt"
    torch.save(VGG19Features().state_dict(), vgg)  # random weights: only the wiring is under test
    cfg = load_config(
        _config_file(tmp_path, sots_small, max_steps=50, max_wall_seconds=0.001),
        overrides={"loss": {"vgg_weights": str(vgg)}},
    )
    with caplog.at_level("INFO"):
        trainer = Trainer(cfg)
        losses = trainer.train()
    assert "term ON" in caplog.text and trainer.perceptual is not None
    assert trainer.step == 1 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (tmp_path / "run" / "last.pt").is_file()
