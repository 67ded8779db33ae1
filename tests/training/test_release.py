"""dehaze release: a training checkpoint becomes weights without training state, same outputs, provenance kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from model.checkpoint import load_checkpoint
from service.cli import main as cli_main
from training.config import REPO_ROOT, load_config
from training.train import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sots_small: Path) -> Path:
    """``last.pt`` of a two-step tiny training run."""
    run_dir = tmp_path_factory.mktemp("run")
    raw = yaml.safe_load((REPO_ROOT / "training" / "configs" / "tiny_smoke.yaml").read_text())
    raw.update(run_dir=str(run_dir), max_steps=2, val_every=2)
    raw["data"].update(root=str(sots_small), val_scenes=["1402"])
    path = run_dir / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    Trainer(load_config(path)).train()
    return run_dir / "last.pt"


def test_release_drops_training_state_and_keeps_outputs(tmp_path: Path, trained: Path) -> None:
    out = tmp_path / "weights.pt"
    assert cli_main(["release", "--checkpoint", str(trained), "--out", str(out), "--meta", "hardware=test cpu"]) == 0
    released, source = load_checkpoint(out), load_checkpoint(trained)
    assert "extra" not in released.raw and out.stat().st_size < trained.stat().st_size
    meta = released.metadata
    assert meta["step"] == 2 and meta["hardware"] == "test cpu" and meta["config"]["variant"] == "dcmpnet_tiny"
    assert meta["train_wall_seconds"] >= 0 and "psnr" in meta
    x = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        for a, b in zip(released.pipeline()(x), source.pipeline()(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_release_reports_bad_input(tmp_path: Path) -> None:
    assert cli_main(["release", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o.pt")]) == 1
    garbage = tmp_path / "garbage.pt"
    torch.save({"format": "other"}, garbage)
    assert cli_main(["release", "--checkpoint", str(garbage), "--out", str(tmp_path / "o.pt")]) == 1
    assert not (tmp_path / "o.pt").exists()
