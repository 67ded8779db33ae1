"""A few steps of the REAL CORUN pre-training loop (corun_tiny, 32×32 crops of 3 SOTS scenes): losses, weights,
checkpoints the service loads, exact resume, dispatch from ``dehaze train`` and ``dehaze release``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from training.config import REPO_ROOT
from training.corun_config import is_corun_config, load_corun_config
from training.corun_train import CorunTrainer

TINY = REPO_ROOT / "training" / "configs" / "corun_tiny.yaml"


def _config_file(run: Path, data: Path, **overrides: object) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    raw["run_dir"] = str(run)
    raw["data"]["sources"][0]["root"] = str(data)
    raw["data"].update(val_root=str(data), val_scenes=["1402"])
    raw.update(overrides)
    run.mkdir(parents=True, exist_ok=True)
    path = run / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_smoke_run_writes_a_checkpoint_the_service_loads(tmp_path: Path, sots_small: Path) -> None:
    from model.checkpoint import load_pipeline_from_weights
    from model.corun_checkpoint import load_corun_checkpoint
    from model.corun_pipeline import CorunPipeline

    run = tmp_path / "run"
    trainer = CorunTrainer(load_corun_config(_config_file(run, sots_small)))
    assert trainer.ema is not None
    net0, ema0 = _params(trainer.net), _params(trainer.ema)
    losses = trainer.train()
    assert trainer.step == 3 and set(losses) == {"l1", "stage_l1", "asm", "perceptual", "total"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()) and losses["l1"] > 0 and losses["asm"] > 0
    assert _changed(net0, trainer.net) and _changed(ema0, trainer.ema)
    assert not _same(trainer.net, trainer.ema)  # the average lags the trained weights

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3] and {"psnr", "ssim", "lr", "elapsed"} <= set(log[0])
    assert set(log[0]["losses"]) == set(losses) and (run / "best.pt").is_file()

    loaded = load_corun_checkpoint(run / "last.pt")
    assert loaded.variant == "corun_tiny" and _same(loaded.net, trainer.ema)  # the shipped network is the EMA
    assert loaded.metadata["weights"] == "ema" and loaded.metadata["step"] == 3
    assert {"opt", "sched", "scaler", "trained", "config", "torch_rng"} <= set(loaded.raw["extra"])
    pipeline = load_pipeline_from_weights(run / "last.pt")
    assert isinstance(pipeline, CorunPipeline)
    with torch.inference_mode():
        out, depth = pipeline(torch.rand(1, 3, 21, 30))
    assert out.shape == (1, 3, 21, 30) and depth.shape == (1, 1, 21, 30)

    with pytest.raises(FileExistsError, match="--resume"):
        CorunTrainer(load_corun_config(_config_file(run, sots_small)))


def test_resume_continues_exactly(tmp_path: Path, sots_small: Path) -> None:
    """Four steps at once equal one step, a fresh trainer with --resume, and three more."""
    straight = CorunTrainer(load_corun_config(_config_file(tmp_path / "straight", sots_small, max_steps=4)))
    straight.train()
    split_cfg = _config_file(tmp_path / "split", sots_small, max_steps=4, max_wall_seconds=1e-9)
    first = CorunTrainer(load_corun_config(split_cfg))
    first.train()  # stops (and saves) after its first step because of the wall-time limit
    assert first.step == 1
    resumed = CorunTrainer(load_corun_config(_config_file(tmp_path / "split", sots_small, max_steps=4)), resume=True)
    assert resumed.step == 1 and resumed.sched.get_last_lr() == first.sched.get_last_lr()
    resumed.train()
    assert resumed.step == 4
    assert _same(straight.net, resumed.net) and straight.ema is not None and resumed.ema is not None
    assert _same(straight.ema, resumed.ema)
    assert straight.sched.get_last_lr() == resumed.sched.get_last_lr()


def test_dehaze_train_dispatches_and_release_ships_the_run(tmp_path: Path, sots_small: Path) -> None:
    from commands.cli import main as cli_main
    from model.corun_checkpoint import load_corun_checkpoint

    run = tmp_path / "run"
    cfg = _config_file(run, sots_small)
    assert is_corun_config(cfg) and not is_corun_config(REPO_ROOT / "training" / "configs" / "tiny_smoke.yaml")
    argv = ["train", "--config", str(cfg), "--set", "max_steps=1", "--set", "val_every=1"]
    assert cli_main(argv) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 1

    out = tmp_path / "corun_tiny.pt"
    argv = ["release", "--checkpoint", str(run / "last.pt"), "--out", str(out), "--meta", "hardware=test cpu"]
    assert cli_main(argv) == 0
    released, source = load_corun_checkpoint(out), load_corun_checkpoint(run / "last.pt")
    assert "extra" not in released.raw and out.stat().st_size < (run / "last.pt").stat().st_size
    meta = released.metadata
    assert meta["step"] == 1 and meta["hardware"] == "test cpu" and meta["config"]["variant"] == "corun_tiny"
    assert meta["train_wall_seconds"] >= 0 and "psnr" in meta and released.variant == "corun_tiny"
    assert _same(released.net, source.net)


def test_held_out_scenes_are_never_hazed_for_training(tmp_path: Path, sots_small: Path) -> None:
    overrides = {"data": {"test_scenes": ["1401"]}}
    trainer = CorunTrainer(load_corun_config(_config_file(tmp_path / "run", sots_small), overrides))
    seen = {trainer.train_set[i]["name"].split("_")[0] for i in range(len(trainer.train_set))}
    assert seen == {"1400"}


def test_shipped_configs_validate_and_reject_mistakes(tmp_path: Path, sots_small: Path) -> None:
    from pydantic import ValidationError

    small = load_corun_config(REPO_ROOT / "training" / "configs" / "corun_small.yaml")
    assert small.variant == "corun_small" and small.data.val_scenes == ["1430", "1431"]
    assert small.data.test_scenes == ["1432", "1433", "1434"] and {s.layout for s in small.data.sources} == {
        "reside",
        "nyu",
    }
    assert small.data.haze.recipe().beta_range == (0.2, 2.8) and small.loss.asm_weight == 0.01
    assert load_corun_config(TINY).variant == "corun_tiny"
    cfg = _config_file(tmp_path / "run", sots_small)
    for bad in ({"variant": "dcmpnet_small"}, {"optim": {"lr_typo": 1}}, {"data": {"haze": {"gamma_p": 2}}}):
        with pytest.raises(ValidationError):
            load_corun_config(cfg, bad)
