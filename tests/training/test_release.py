"""dehaze release: a training checkpoint becomes weights without training state, same outputs, provenance kept."""

from __future__ import annotations

from pathlib import Path

import torch

from commands.cli import main as cli_main
from model.checkpoint import load_checkpoint


def test_release_drops_training_state_and_keeps_outputs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "weights.pt"
    argv = ["release", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--meta", "hardware=test cpu"]
    assert cli_main(argv) == 0
    released, source = load_checkpoint(out), load_checkpoint(tiny_checkpoint)
    assert "extra" not in released.raw and out.stat().st_size < tiny_checkpoint.stat().st_size
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
