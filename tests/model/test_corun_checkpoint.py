"""CORUN in our checkpoint format and the authors' ``CORUN.pth`` (model/corun_checkpoint.py), loaded by the one entry
point every command uses (``model.checkpoint.load_pipeline_from_weights``) beside DCMPNet's files.

The authors' file is stood in for by a dict with their layout (``params_ema`` and ``params``) and exactly their keys
and shapes (``golden/corun_state_dict.json``, the listing of their released state dict).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, load_pipeline_from_weights, read_weights, save_checkpoint, variant_of
from model.corun import create_corun, get_corun_config
from model.corun_checkpoint import (
    holds_corun,
    load_corun_checkpoint,
    load_official_corun,
    save_corun_checkpoint,
)
from model.corun_pipeline import CorunPipeline
from model.pipeline import DehazePipeline, build_pipeline

OFFICIAL_KEYS = Path(__file__).parent / "golden" / "corun_state_dict.json"


def _official_state(value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full(shape, value) for k, shape in json.loads(OFFICIAL_KEYS.read_text())["keys"].items()}


def test_round_trip_keeps_weights_variant_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_corun("corun_tiny").eval()
    path = save_corun_checkpoint(tmp_path / "c.pt", net, "corun_tiny", {"step": 3}, extra={"opt": {"lr": 1.0}})
    raw = read_weights(path, "cpu")
    assert raw["format"] == "dehaze-checkpoint/1" and raw["family"] == "corun" and variant_of(raw) == "corun_tiny"
    loaded = load_corun_checkpoint(path)
    assert loaded.variant == "corun_tiny" and loaded.metadata == {"step": 3} and loaded.raw["extra"]["opt"]["lr"] == 1
    assert not loaded.net.training and loaded.net.cfg == get_corun_config("corun_tiny")
    x = torch.rand(1, 3, 20, 28)
    with torch.inference_mode():
        for a, b in zip(net(x), loaded.net(x), strict=True):
            assert torch.equal(a, b)


def test_the_one_entry_point_dispatches_on_the_family(tmp_path: Path) -> None:
    corun = save_corun_checkpoint(tmp_path / "c.pt", create_corun("corun_tiny"), "corun_tiny", {})
    dcmpnet = build_pipeline("dcmpnet_tiny")
    dcmp = save_checkpoint(tmp_path / "d.pt", dcmpnet.phi, dcmpnet.psi, "dcmpnet_tiny", {})
    assert isinstance(load_pipeline_from_weights(corun), CorunPipeline)
    assert isinstance(load_pipeline_from_weights(dcmp), DehazePipeline)  # DCMPNet files load unchanged
    assert not holds_corun(read_weights(dcmp, "cpu"))
    with pytest.raises(ValueError, match="corun"):
        load_checkpoint(corun)  # DCMPNet's loader names the family instead of failing on the variant


def test_variant_and_network_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="corun_small"):
        save_corun_checkpoint(tmp_path / "c.pt", create_corun("corun_tiny"), "corun_small", {})
    path = save_corun_checkpoint(tmp_path / "c.pt", create_corun("corun_tiny"), "corun_tiny", {})
    raw = read_weights(path, "cpu")
    raw["variant"] = "corun_small"
    torch.save(raw, path)
    with pytest.raises(ValueError, match="do not fit"):
        load_corun_checkpoint(path)
    raw["variant"] = "corun_huge"
    torch.save(raw, path)
    with pytest.raises(ValueError, match="unknown CORUN variant"):
        load_pipeline_from_weights(path)


def test_authors_file_loads_strictly_into_the_paper_variant(tmp_path: Path) -> None:
    path = tmp_path / "CORUN.pth"
    ema = _official_state(0.25)
    ema = {f"module.{k}" if k.startswith("first.") else k: v for k, v in ema.items()}  # DataParallel prefixes
    torch.save({"params": _official_state(0.5), "params_ema": ema}, path)
    net = load_official_corun(path)
    assert net.cfg == get_corun_config("corun") and not net.training
    assert net.first.trans_prox.step_lambda.item() == 0.25  # the EMA weights, as the authors' inference uses
    assert variant_of(read_weights(path, "cpu")) == "corun"
    pipeline = load_pipeline_from_weights(path)
    assert isinstance(pipeline, CorunPipeline) and pipeline.net.last.dehaze_prox.step_lambda.item() == 0.25


def test_authors_file_with_other_keys_is_refused(tmp_path: Path) -> None:
    state = _official_state(0.25)
    state.pop("last.dehaze_prox.step_lambda")
    torch.save({"params_ema": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit"):
        load_official_corun(tmp_path / "bad.pth")
    torch.save({"something": 1}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not the authors' CORUN"):
        load_official_corun(tmp_path / "other.pth")
