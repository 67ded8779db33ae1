"""``dehaze finetune`` end to end on the tiny variants: losses, the EMA teacher, the checkpoint, exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from commands.cli import main as dehaze
from model.checkpoint import load_pipeline_from_weights, read_weights
from tests.training.colabator_fixtures import tiny_config
from training.colabator.config import load_finetune_config
from training.colabator.finetune import Finetuner
from training.colabator.networks import load_finetune_net

VARIANTS = ["dcmpnet_tiny", "corun_tiny"]


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("variant", VARIANTS)
def test_finetune_command_end_to_end(tmp_path: Path, variant: str) -> None:
    cfg = tiny_config(tmp_path, variant)
    assert dehaze(["finetune", "--config", str(cfg), "--real", str(tmp_path / "real")]) == 0

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    terms = {"synthetic", "real", "total"} | ({"depth", "real_depth"} if variant.startswith("dcmpnet") else {"asm"})
    assert set(log[-1]["losses"]) == terms
    assert all(math.isfinite(v) for r in log for v in r["losses"].values())
    assert log[-1]["pool"]["size"] == 3 and log[-1]["pool"]["offers"] == 6  # batch 2 × 3 steps, 3 photos

    # The model in last.pt is the EMA teacher; the student rides in extra. Both moved away from the start.
    init = load_finetune_net(tmp_path / f"{variant}.pt")
    teacher = load_finetune_net(run / "last.pt")
    raw = read_weights(run / "last.pt", "cpu")
    student = load_finetune_net(tmp_path / f"{variant}.pt")
    student.load_state_dict(raw["extra"]["student"])
    assert _differs(_params(init), _params(teacher)) and _differs(_params(init), _params(student))
    assert _differs(_params(teacher), _params(student))
    assert raw["metadata"]["weights"] == "ema-teacher" and raw["metadata"]["step"] == 3

    # It loads like any checkpoint of its family (dehaze run, the service).
    dehazed, depth = load_pipeline_from_weights(run / "last.pt")(torch.rand(1, 3, 37, 45))
    assert dehazed.shape == (1, 3, 37, 45) and depth.shape == (1, 1, 37, 45)
    assert torch.isfinite(dehazed).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_teacher_is_the_ema_of_the_student(tmp_path: Path, variant: str) -> None:
    ft = Finetuner(load_finetune_config(tiny_config(tmp_path, variant)))
    decay = ft.cfg.ema_decay
    for _ in range(2):
        teacher_before, student_before = _params(ft.teacher), _params(ft.student)
        losses = ft.train_step()
        assert all(math.isfinite(v) for v in losses.values())
        teacher_after, student_after = _params(ft.teacher), _params(ft.student)
        assert _differs(student_before, student_after) and _differs(teacher_before, teacher_after)
        for name, t in teacher_after.items():
            expected = decay * teacher_before[name] + (1 - decay) * student_after[name]
            torch.testing.assert_close(t, expected, rtol=1e-6, atol=1e-7, msg=name)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    whole = Finetuner(load_finetune_config(tiny_config(tmp_path, "corun_tiny", run="whole", max_steps=4)))
    whole.train()
    cfg = load_finetune_config(tiny_config(tmp_path, "corun_tiny", run="split", max_steps=4))
    Finetuner(cfg).train(stop_at=2)
    assert read_weights(tmp_path / "split" / "last.pt", "cpu")["extra"]["step"] == 2
    with pytest.raises(FileExistsError, match="--resume"):
        Finetuner(cfg)
    resumed = Finetuner(cfg, resume=True)
    assert resumed.step == 2
    resumed.train()

    a, b = (read_weights(tmp_path / run / "last.pt", "cpu") for run in ("whole", "split"))
    assert a["extra"]["step"] == b["extra"]["step"] == 4
    for key in a["net"]:
        assert torch.equal(a["net"][key], b["net"][key]), key
    for key in a["extra"]["student"]:
        assert torch.equal(a["extra"]["student"][key], b["extra"]["student"][key]), key
    pa, pb = a["extra"]["pool"], b["extra"]["pool"]
    assert (pa["offers"], pa["replacements"]) == (pb["offers"], pb["replacements"])
    for name, entry in pa["entries"].items():
        assert entry["scores"] == pb["entries"][name]["scores"] and entry["step"] == pb["entries"][name]["step"]
        assert torch.equal(entry["label"], pb["entries"][name]["label"])
    assert torch.equal(a["extra"]["torch_rng"], b["extra"]["torch_rng"])
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_held_out_photos_are_read_from_the_referenced_list(tmp_path: Path) -> None:
    from training.config import REPO_ROOT

    small = load_finetune_config(REPO_ROOT / "training" / "configs" / "colabator_small.yaml")
    held = small.real.held_out()
    assert len(held) == 19 and "BJ_Baidu_544" in held and "y1_input" in held
    cfg = tiny_config(tmp_path, "corun_tiny", real={"exclude_names": ["photo1"]})
    ft = Finetuner(load_finetune_config(cfg))
    assert sorted(p.name for p in ft.photos) == ["photo0", "photo2"]


def test_tone_guard_keeps_crushed_and_tinted_labels_out(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "dcmpnet_tiny", pool={"max_crushed": 0.01, "max_color_shift": 0.02})
    ft = Finetuner(load_finetune_config(cfg))
    photo = ft.photos[0]
    first = np.clip(photo.image * 0.8 + 0.1, 0.0, 1.0).astype(np.float32)
    assert ft._offer(photo, first, "first")  # the first label of a photo is always kept

    crushed = photo.image.copy()
    crushed[: crushed.shape[0] // 2] = 0.0  # half the pixels near-black
    tinted = np.clip(photo.image + np.array([0.1, 0.0, 0.0], dtype=np.float32), 0.0, 1.0)
    assert not ft.natural_tones(photo, crushed) and not ft.natural_tones(photo, tinted)
    better_on_all = {k: math.inf if up else -math.inf for k, up in ft.pool.higher_is_better.items()}
    ft.score = lambda label: better_on_all  # every criterion would prefer the candidate
    assert not ft._offer(photo, crushed, "crushing") and not ft._offer(photo, tinted, "tinting")
    assert ft.pool.get(photo.name).source == "first"
    assert ft.natural_tones(photo, photo.image) and ft._offer(photo, photo.image.copy(), "natural")
    assert ft.pool.get(photo.name).source == "natural"


def test_priors_seed_the_pool_with_their_outputs(tmp_path: Path) -> None:
    from training.colabator.priors import prior_label

    cfg = tiny_config(tmp_path, "dcmpnet_tiny", pool={"priors": ["dcp"]})
    ft = Finetuner(load_finetune_config(cfg))
    assert ft.pool.sources() == {"dcp": 3}
    photo = ft.photos[1]
    stored = ft.pool.get(photo.name).label.float().permute(1, 2, 0).numpy()
    expected = prior_label(photo.image, "dcp")
    np.testing.assert_allclose(stored, expected, atol=1e-3)  # float16 storage
    assert np.abs(expected - photo.image).mean() > 0.02  # the prior did dehaze the photo


def test_unknown_priors_are_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from training.colabator.priors import prior_label

    with pytest.raises(ValidationError, match="dcp"):
        load_finetune_config(tiny_config(tmp_path, "dcmpnet_tiny", pool={"priors": ["cap"]}))
    with pytest.raises(ValueError, match="unknown prior"):
        prior_label(np.zeros((8, 8, 3), np.float32), "cap")
