"""Which precision a device computes in (model/precision.py) and the artifact path of each (service/config.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from model import precision
from model.pipeline import build_pipeline
from model.precision import CastPipeline, artifact_dtype_for, resolve_dtype
from service.config import PRECISIONS, Settings


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-bf16"])
def native(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Pretend the CPU has (or lacks) native bfloat16, whatever this machine has."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    monkeypatch.setattr(precision, "_WARNED", set())  # each case starts with no warning given yet
    return bool(request.param)


def test_auto_is_bfloat16_only_on_a_cpu_with_native_bfloat16(native: bool) -> None:
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert resolve_dtype("auto", "cuda") == "float32"
    assert resolve_dtype("float32", "cpu") == "float32"


def test_explicit_choices_are_kept_or_explained(native: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="model.precision"):
        assert resolve_dtype("float16", "cpu") == "float32"
        assert "not offered on the CPU" in caplog.text
        caplog.clear()
        assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
        assert ("slower than float32" in caplog.text) is not native
    assert resolve_dtype("float16", "cuda") == resolve_dtype("float16", "cuda") == "float16"
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")


def test_each_warning_is_given_once_per_process(native: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The service resolves its precision twice (the artifact, then the runner); the operator reads it once."""
    with caplog.at_level(logging.WARNING, logger="model.precision"):
        for _ in range(2):
            resolve_dtype("float16", "cpu")
            resolve_dtype("bfloat16", "cpu")
    assert len(caplog.records) == (1 if native else 2)


def test_the_artifact_holds_the_cpu_precision_and_float32_for_cuda_autocast(native: bool) -> None:
    assert artifact_dtype_for("auto", "cpu") == ("bfloat16" if native else "float32")
    assert artifact_dtype_for("bfloat16", "cuda") == "float32"


def test_the_native_probe_reads_pytorchs_cpu_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.cpu_has_native_bf16()


def test_settings_and_commands_offer_the_same_precisions() -> None:
    assert PRECISIONS == precision.DTYPES


def test_cast_pipeline_keeps_the_float32_contract_and_the_callers_weights() -> None:
    torch.manual_seed(0)
    pipeline = build_pipeline("dcmpnet_tiny").eval()
    before = {k: v.clone() for k, v in pipeline.state_dict().items()}
    cast = CastPipeline(pipeline, torch.bfloat16).eval()
    x = torch.rand(2, 3, 24, 40)
    with torch.inference_mode():
        low, high = cast(x), pipeline(x)
    assert all(p.dtype == torch.bfloat16 for p in cast.parameters())
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in pipeline.state_dict().items())
    assert [t.dtype for t in low] == [torch.float32, torch.float32]
    assert 0 < float((low[0] - high[0]).abs().max()) < 0.1


def test_each_precision_has_its_own_artifact_file(tmp_path: Path) -> None:
    weights = tmp_path / "w" / "dcmpnet_small.pt"
    default = Settings(weights=weights)
    assert default.artifact_path() == weights.with_name("dcmpnet_small.ts.pt")
    assert default.artifact_path("bfloat16") == weights.with_name("dcmpnet_small.bfloat16.ts.pt")
    given = Settings(weights=weights, artifact=tmp_path / "opt" / "model.ts.pt")
    assert given.artifact_path("float32") == tmp_path / "opt" / "model.ts.pt"
    assert given.artifact_path("bfloat16") == tmp_path / "opt" / "model.bfloat16.ts.pt"
    named = Settings(weights=weights, artifact=tmp_path / "opt" / "model.bfloat16.ts.pt")
    assert named.artifact_path("bfloat16") == tmp_path / "opt" / "model.bfloat16.ts.pt"
