"""Tests for checkpoints (model/checkpoint.py): our format, the authors' format, loading a pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    DEFAULT_WEIGHTS,
    FORMAT,
    from_official_keys,
    load_checkpoint,
    load_official,
    load_pipeline_from_weights,
    read_weights,
    save_checkpoint,
    to_official_keys,
)
from model.dcmpnet import DCMPNet
from model.depthnet import DepthNet
from model.pipeline import build_pipeline
from model.variants import get_variant


def _outputs(phi: DCMPNet, psi: DepthNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        depth = psi(x)
        return phi(x, depth), depth


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pipeline = build_pipeline("dcmpnet_tiny")
    path = save_checkpoint(
        tmp_path / "sub" / "tiny.pt",
        pipeline.phi,
        pipeline.psi,
        "dcmpnet_tiny",
        {"epoch": 3, "psnr": 20.5},
        extra={"optim": {"lr": 1e-4}},
    )
    assert [p.name for p in path.parent.iterdir()] == ["tiny.pt"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable by others, e.g. a container's user
    loaded = load_checkpoint(path)
    assert loaded.variant.name == "dcmpnet_tiny" and loaded.metadata == {"epoch": 3, "psnr": 20.5}
    assert loaded.raw["format"] == FORMAT and loaded.raw["value_range"] == [0, 1]
    assert loaded.raw["depth_convention"] == "depth" and loaded.raw["extra"] == {"optim": {"lr": 1e-4}}
    assert not loaded.phi.training and not loaded.psi.training
    x = torch.rand(1, 3, 33, 35)
    for a, b in zip(_outputs(pipeline.phi, pipeline.psi, x), _outputs(loaded.phi, loaded.psi, x), strict=True):
        assert torch.equal(a, b)


def test_save_accepts_variant_object_and_convention(tmp_path: Path) -> None:
    variant = get_variant("dcmpnet_tiny")
    pipeline = build_pipeline("dcmpnet_tiny")
    path = save_checkpoint(tmp_path / "t.pt", pipeline.phi, pipeline.psi, variant, {}, depth_convention="disparity")
    loaded = load_checkpoint(path)
    assert loaded.depth_convention == "disparity" and loaded.pipeline().depth_is_disparity
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "u.pt", pipeline.phi, pipeline.psi, variant, {}, depth_convention="inverse")  # type: ignore[arg-type]


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="dehaze_net"):
        load_official(tmp_path / "foreign.pt")


def test_load_is_strict_about_the_variant(tmp_path: Path) -> None:
    pipeline = build_pipeline("dcmpnet_tiny")
    path = save_checkpoint(tmp_path / "t.pt", pipeline.phi, pipeline.psi, "dcmpnet_tiny", {})
    raw = torch.load(path, weights_only=True)
    raw["variant"] = "dcmpnet_small"
    torch.save(raw, path)
    with pytest.raises(RuntimeError):
        load_checkpoint(path)


def test_official_key_renaming_is_a_bijection() -> None:
    phi = DCMPNet(get_variant("dcmpnet_tiny").phi)
    ours = phi.state_dict()
    official = to_official_keys(ours)
    assert "ca.0.weight" in official and "msaam.ca.0.weight" in ours
    assert set(from_official_keys(official)) == set(ours)
    assert len(official) == len(ours)
    assert sorted(map(id, official.values())) == sorted(map(id, ours.values()))  # same tensors, renamed only


def test_load_official_layout_with_dataparallel_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    variant = get_variant("dcmpnet")
    phi, psi = DCMPNet(variant.phi).eval(), DepthNet(variant.psi).eval()
    dehaze = {f"module.{k}": v for k, v in to_official_keys(phi.state_dict()).items()}
    path = tmp_path / "DIACMPN-dehaze-Indoor.pth"
    torch.save({"dehaze_net": dehaze, "depth_net": psi.state_dict(), "epoch_dehaze": 600}, path)

    loaded_phi, loaded_psi = load_official(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(phi(x), loaded_phi(x))
        assert torch.equal(psi(x), loaded_psi(x))

    pipeline = load_pipeline_from_weights(path)
    assert pipeline.depth_is_disparity


def test_load_pipeline_from_our_weights(tmp_path: Path) -> None:
    source = build_pipeline("dcmpnet_tiny")
    path = save_checkpoint(tmp_path / "t.pt", source.phi, source.psi, "dcmpnet_tiny", {})
    pipeline = load_pipeline_from_weights(path)
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        for a, b in zip(source(x), pipeline(x), strict=True):
            assert torch.equal(a, b)


def test_missing_weights_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_pipeline_from_weights(tmp_path / "dcmpnet_small.pt")
    assert DEFAULT_WEIGHTS.name == "dcmpnet_t.pt" and DEFAULT_WEIGHTS.parent.name == "weights"


def test_the_shipped_real_photo_weights_are_the_default_fine_tuned() -> None:
    """``dcmpnet_small_real.pt`` (its model card): the default's network after Colabator, with its provenance."""
    real = DEFAULT_WEIGHTS.with_name("dcmpnet_small_real.pt")
    meta = read_weights(real, "cpu")["metadata"]
    assert meta["method"] == "colabator" and meta["weights"] == "ema-teacher" and meta["step"] == 300
    assert meta["init_from"] == "model/weights/dcmpnet_small.pt" and meta["real_photos"] == 45
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tuned, depth = load_pipeline_from_weights(real)(x)
        default, _ = load_pipeline_from_weights(DEFAULT_WEIGHTS.with_name("dcmpnet_small.pt"))(x)
    assert tuned.shape == x.shape and depth.shape == (1, 1, 48, 64) and torch.isfinite(tuned).all()
    assert (tuned - default).abs().mean() > 1e-3  # fine-tuning moved the weights
