"""The TorchScript export (model/export.py, commands/export.py): one artifact for every batch and image size."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from commands.export import add_arguments, run
from model.checkpoint import save_checkpoint
from model.export import (
    artifact_dtype,
    artifact_info,
    check_export,
    ensure_artifact,
    export_pipeline,
    file_sha256,
    load_artifact,
    weights_licence,
)
from model.pipeline import DehazePipeline, build_pipeline


@pytest.fixture(scope="module")
def tiny_pipeline() -> DehazePipeline:
    torch.manual_seed(0)
    return build_pipeline("dcmpnet_tiny")


@pytest.fixture(scope="module")
def artifact(tiny_pipeline: DehazePipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_pipeline(tiny_pipeline, tmp_path_factory.mktemp("export") / "tiny.ts.pt")


def test_one_artifact_matches_eager_at_every_batch_and_size(tiny_pipeline: DehazePipeline, artifact: Path) -> None:
    traced = load_artifact(artifact, "cpu")
    diff = check_export(tiny_pipeline, traced, [(37, 53), (1, 1), (64, 64), (31, 90)], [1, 2, 3])
    assert diff < 1e-4


def test_artifact_outputs_follow_the_contract(artifact: Path) -> None:
    traced = load_artifact(artifact)
    with torch.inference_mode():
        dehazed, depth = traced(torch.rand(2, 3, 2, 300))
    assert dehazed.shape == (2, 3, 2, 300) and depth.shape == (2, 1, 2, 300)
    assert float(dehazed.min()) >= 0 and float(dehazed.max()) <= 1 and float(depth.max()) <= 1


def test_export_leaves_the_callers_pipeline_as_it_was(tiny_pipeline: DehazePipeline, tmp_path: Path) -> None:
    """The artifact is traced from a channels-last copy; the caller's weights keep their values and layout."""
    before = {name: (value.clone(), value.stride()) for name, value in tiny_pipeline.state_dict().items()}
    export_pipeline(tiny_pipeline, tmp_path / "copy.ts.pt")
    for name, value in tiny_pipeline.state_dict().items():
        assert torch.equal(value, before[name][0]) and value.stride() == before[name][1], name


def test_check_export_detects_a_different_model(tiny_pipeline: DehazePipeline, artifact: Path) -> None:
    torch.manual_seed(1)
    other = build_pipeline("dcmpnet_tiny")
    assert check_export(other, load_artifact(artifact), [(40, 40)], [1]) > 1e-4


def test_trace_warnings_fail_the_export(tmp_path: Path) -> None:
    class FreezesBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(int(x.shape[0]), -1)

    with pytest.raises(RuntimeError, match="froze"):
        export_pipeline(FreezesBatch(), tmp_path / "bad.ts.pt", example_hw=(4, 4))
    assert not (tmp_path / "bad.ts.pt").exists()


def test_ensure_artifact_exports_when_missing_or_made_from_other_weights(
    tiny_pipeline: DehazePipeline, tmp_path: Path
) -> None:
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", {})
    artifact = tmp_path / "a.ts.pt"
    assert ensure_artifact(weights, artifact) == artifact and artifact.is_file()
    info = {"variant": "dcmpnet_tiny", "weights_sha256": file_sha256(weights), "licence": "MIT", "dtype": "float32"}
    assert artifact_info(artifact) == info
    first = artifact.stat().st_mtime_ns
    later = first / 1e9 + 10
    os.utime(weights, (later, later))  # touched, same content: the artifact is still the right one
    ensure_artifact(weights, artifact)
    assert artifact.stat().st_mtime_ns == first
    other = build_pipeline("dcmpnet_tiny")
    save_checkpoint(weights, other.phi, other.psi, "dcmpnet_tiny", {"other": 1})
    earlier = first / 1e9 - 100
    os.utime(weights, (earlier, earlier))  # other weights, older mtime (a copy or a checkout): re-exported
    ensure_artifact(weights, artifact)
    assert artifact.stat().st_mtime_ns != first and artifact_info(artifact)["weights_sha256"] == file_sha256(weights)
    with pytest.raises(FileNotFoundError):
        ensure_artifact(tmp_path / "missing.pt", artifact)


@pytest.mark.parametrize(("metadata", "licence"), [({"licence": "GPL-3.0"}, "GPL-3.0"), ({"step": 1}, "MIT")])
def test_the_artifact_records_the_licence_of_its_weights(
    tiny_pipeline: DehazePipeline, tmp_path: Path, metadata: dict[str, object], licence: str
) -> None:
    """The checkpoint's ``metadata["licence"]``, else the project's own licence (MIT)."""
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", metadata)
    assert weights_licence(weights) == licence
    assert artifact_info(ensure_artifact(weights, tmp_path / "a.ts.pt"))["licence"] == licence
    out = tmp_path / "cli.ts.pt"
    assert run(_cli("--weights", str(weights), "--out", str(out))) == 0
    assert artifact_info(out)["licence"] == licence


def test_an_artifact_that_records_no_licence_is_exported_again(tiny_pipeline: DehazePipeline, tmp_path: Path) -> None:
    """An artifact of these weights exported before licences were recorded would serve an unknown licence."""
    metadata = {"licence": "GPL-3.0"}
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", metadata)
    old_record = {"variant": "dcmpnet_tiny", "weights_sha256": file_sha256(weights)}
    artifact = export_pipeline(tiny_pipeline, tmp_path / "a.ts.pt", info=old_record)
    ensure_artifact(weights, artifact)
    assert artifact_info(artifact) == {**old_record, "licence": "GPL-3.0", "dtype": "float32"}
    first = artifact.stat().st_mtime_ns
    ensure_artifact(weights, artifact)  # it records the licence now: kept
    assert artifact.stat().st_mtime_ns == first


def test_cli_records_the_project_licence_for_untrained_weights(tmp_path: Path) -> None:
    out = tmp_path / "untrained.ts.pt"
    assert run(_cli("--random-init", "--variant", "dcmpnet_tiny", "--out", str(out))) == 0
    assert artifact_info(out)["licence"] == "MIT"


def test_a_bfloat16_artifact_computes_in_bfloat16_with_the_float32_contract(
    tiny_pipeline: DehazePipeline, tmp_path: Path
) -> None:
    """Same shapes and float32 outputs at every batch and size; values near float32's but not equal to them."""
    path = export_pipeline(tiny_pipeline, tmp_path / "tiny.bfloat16.ts.pt", dtype="bfloat16")
    assert artifact_dtype(path) == "bfloat16"
    traced = load_artifact(path)
    x = torch.rand(3, 3, 31, 90, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reduced, reference = traced(x), tiny_pipeline(x)
    for low, high in zip(reduced, reference, strict=True):
        assert low.dtype == torch.float32 and low.shape == high.shape
        assert float((low - high).abs().max()) < 0.1
    assert float((reduced[0] - reference[0]).abs().max()) > 0  # the dehazed image: really not float32
    assert check_export(tiny_pipeline, traced, [(1, 1), (64, 64)], [1, 2]) < 0.1
    with pytest.raises(ValueError, match="unknown dtype"):
        export_pipeline(tiny_pipeline, tmp_path / "x.ts.pt", dtype="int4")


def test_ensure_artifact_re_exports_for_another_precision(tiny_pipeline: DehazePipeline, tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", {})
    artifact = ensure_artifact(weights, tmp_path / "a.ts.pt")
    assert artifact_dtype(artifact) == "float32"
    ensure_artifact(weights, artifact, "bfloat16")
    assert artifact_dtype(artifact) == "bfloat16"
    first = artifact.stat().st_mtime_ns
    ensure_artifact(weights, artifact, "bfloat16")  # the right one already: kept
    assert artifact.stat().st_mtime_ns == first


def test_artifact_info_reads_the_record_without_loading_the_model(
    tiny_pipeline: DehazePipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No deserialised model (and no torch work on the caller's thread: ``model.openmp``) to read three strings."""
    path = export_pipeline(tiny_pipeline, tmp_path / "tiny.ts.pt", info={"variant": "dcmpnet_tiny"})

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("artifact_info loaded the model")

    monkeypatch.setattr(torch.jit, "load", no_load)
    assert artifact_info(path) == {"variant": "dcmpnet_tiny", "dtype": "float32"}
    garbage = tmp_path / "garbage.ts.pt"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        artifact_info(garbage)


def test_ensure_artifact_exports_over_a_file_that_is_not_an_artifact(
    tiny_pipeline: DehazePipeline, tmp_path: Path
) -> None:
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", {})
    artifact = tmp_path / "a.ts.pt"
    artifact.write_bytes(b"\x00" * 64)  # e.g. a half-copied volume
    ensure_artifact(weights, artifact)
    assert artifact_info(artifact)["weights_sha256"] == file_sha256(weights)
    assert check_export(tiny_pipeline, load_artifact(artifact), [(20, 24)], [1]) < 1e-4


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_exports_weights_and_checks_variant(tiny_pipeline: DehazePipeline, tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", {})
    out = tmp_path / "cli.ts.pt"
    assert run(_cli("--weights", str(weights), "--out", str(out), "--variant", "dcmpnet_tiny", "--check")) == 0
    traced = load_artifact(out)
    assert check_export(tiny_pipeline, traced, [(33, 35)], [2]) < 1e-4
    assert run(_cli("--weights", str(weights), "--out", str(tmp_path / "x.pt"), "--variant", "dcmpnet_small")) == 1
    assert run(_cli("--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "y.pt"))) == 1
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_cli_exports_a_bfloat16_artifact_and_checks_it_against_float32(
    tiny_pipeline: DehazePipeline, tmp_path: Path
) -> None:
    weights = save_checkpoint(tmp_path / "w.pt", tiny_pipeline.phi, tiny_pipeline.psi, "dcmpnet_tiny", {})
    out = tmp_path / "cli.bfloat16.ts.pt"
    assert run(_cli("--weights", str(weights), "--out", str(out), "--dtype", "bfloat16", "--check")) == 0
    assert artifact_info(out)["dtype"] == "bfloat16"
