"""Warm start + fine-tuning on a tiny configuration, and a resume from the compact resume state on a 'new machine'."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from commands.cli import main as dehaze
from model.checkpoint import load_checkpoint
from model.dcmpnet import DCMPNet
from model.variants import get_variant
from model.warm_start import backbone_parameter_names
from tests.model.test_warm_start import as_dehazeformer_file
from training.config import REPO_ROOT, load_config
from training.resume_state import MOMENTS, pack, unpack
from training.trainer import Trainer

SMOKE = REPO_ROOT / "training" / "configs" / "tiny_smoke.yaml"


@pytest.fixture
def dehazeformer_file(tmp_path: Path) -> Path:
    torch.manual_seed(7)
    return as_dehazeformer_file(DCMPNet(get_variant("dcmpnet_t_tiny").phi), tmp_path / "tiny_dehazeformer.pth")


def _config(tmp_path: Path, data: Path, dehazeformer: Path, **overrides: object) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(
        variant="dcmpnet_t_tiny",
        run_dir=str(tmp_path / "run"),
        warm_start={"dehazeformer": str(dehazeformer), "licence": "GPL-3.0"},
        resume_state=str(tmp_path / "state" / "tiny.pt"),
        **overrides,
    )
    raw["data"].update(root=str(data), val_scenes=["1402"])
    raw["optim"].update(lr_backbone=1e-5)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_warm_start_then_fine_tune_with_two_learning_rates(tmp_path: Path, sots_small: Path, dehazeformer_file: Path):
    trainer = Trainer(load_config(_config(tmp_path, sots_small, dehazeformer_file)))
    source = torch.load(dehazeformer_file, weights_only=True)["state_dict"]
    assert torch.equal(trainer.phi.legm1.blocks[0].mlp.mlp[0].weight, source["module.layer1.blocks.0.mlp.mlp.0.weight"])
    backbone, rest = trainer.opt_phi.param_groups
    assert backbone["lr"] == pytest.approx(1e-5) and rest["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in backbone["params"]} == {
        id(p) for n, p in trainer.phi.named_parameters() if n in backbone_parameter_names(trainer.phi)
    }
    before = trainer.phi.conv1.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.phi.conv1.weight)  # the fusions learn to use the added inputs

    shipped = load_checkpoint(tmp_path / "run" / "best.pt")
    assert shipped.metadata["licence"] == "GPL-3.0" and shipped.metadata["warm_start"] == "tiny_dehazeformer.pth"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["lr_backbone"] < log[-1]["lr_phi"]


def test_resume_from_the_packed_state_where_the_run_folder_is_gone(
    tmp_path: Path, sots_small: Path, dehazeformer_file: Path
) -> None:
    cfg_path = _config(tmp_path, sots_small, dehazeformer_file)
    Trainer(load_config(cfg_path)).train()
    state_file = tmp_path / "state" / "tiny.pt"
    state = torch.load(state_file, weights_only=True)
    moments = [v for entry in state["extra"]["opt_phi"]["state"].values() for k, v in entry.items() if k in MOMENTS]
    assert moments and all(m.dtype == torch.bfloat16 for m in moments)
    assert state["extra"]["step"] == 3 and '"step": 3' in state["log"]
    last = load_checkpoint(tmp_path / "run" / "last.pt")

    shutil.rmtree(tmp_path / "run")  # a new machine: only the committed state is left
    cfg_path = _config(tmp_path, sots_small, dehazeformer_file, max_steps=5)
    trainer = Trainer(load_config(cfg_path), resume=True)
    assert trainer.step == 3
    for key, value in last.phi.state_dict().items():
        assert torch.equal(trainer.phi.state_dict()[key], value), key
    exact = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["extra"]["opt_phi"]["state"][0]["exp_avg"]
    assert exact.dtype == torch.float32
    trainer.train()
    assert trainer.step == 5
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4, 5]
    assert dehaze(["train", "--config", str(cfg_path), "--resume"]) == 0  # nothing left to do: exits cleanly


def test_unpack_never_overwrites_a_live_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"live")
    fake = tmp_path / "ckpt.pt"
    torch.save({"extra": {"step": 1, "opt_phi": {"state": {}, "param_groups": []}}}, fake)
    packed = pack(fake, tmp_path / "state.pt")
    with pytest.raises(FileExistsError, match=r"last\.pt exists"):
        unpack(packed, tmp_path / "run")
    with pytest.raises(ValueError, match="not a resume state"):
        unpack(fake, tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="no training state"):
        torch.save({"phi": {}}, fake)
        pack(fake, tmp_path / "state2.pt")


def test_warm_start_needs_a_licence(tmp_path: Path, sots_small: Path, dehazeformer_file: Path) -> None:
    raw = yaml.safe_load(_config(tmp_path, sots_small, dehazeformer_file).read_text())
    del raw["warm_start"]["licence"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="licence"):
        load_config(tmp_path / "bad.yaml")


def test_the_warm_up_rises_linearly_then_the_cosine_takes_over() -> None:
    from training.loop import cosine_factor

    factors = [cosine_factor(s, 10, 1e-3, 1e-5, warmup=4) for s in range(11)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(cosine_factor(4, 10, 1e-3, 1e-5))  # no shift of the cosine
    assert factors[10] == pytest.approx(1e-2) and all(a >= b for a, b in itertools.pairwise(factors[3:]))


def test_the_depth_only_stage_trains_psi_and_leaves_phi_exactly_as_warm_started(
    tmp_path: Path, sots_small: Path, dehazeformer_file: Path
) -> None:
    loss = {
        **yaml.safe_load(SMOKE.read_text())["loss"],
        "depth_absolute_weight": 0.2,
        "depth_scale_invariant_weight": 1.0,
    }
    path = _config(tmp_path, sots_small, dehazeformer_file, formulation="depth_only", max_steps=4, loss=loss)
    cfg = load_config(path)
    trainer = Trainer(cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_crop": None})}))
    assert (trainer.dual_task.loss.depth_absolute_weight, trainer.dual_task.loss.depth_scale_invariant_weight) == (
        0.2,
        1.0,
    )
    with torch.no_grad():  # a random tiny Ψ predicts negative depth, which cannot be scored: lift it
        trainer.psi.final_conv.bias.fill_(2.0)
    phi0 = {k: v.clone() for k, v in trainer.phi.state_dict().items()}
    psi0 = {k: v.clone() for k, v in trainer.psi.state_dict().items()}
    losses = trainer.train()
    assert losses["unet"] == 0.0 and losses["depth_consistency"] == 0.0 and losses["depth"] > 0
    assert all(torch.equal(phi0[k], v) for k, v in trainer.phi.state_dict().items())
    assert any(not torch.equal(psi0[k], v) for k, v in trainer.psi.state_dict().items() if v.is_floating_point())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    best = load_checkpoint(tmp_path / "run" / "best.pt").metadata
    assert best["depth_delta1"] == max(r["depth_delta1"] for r in log)  # chosen by depth, not by (constant) PSNR
