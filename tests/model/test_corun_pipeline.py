"""CORUN behind the inference contract (model/corun_pipeline.py, model/families.py) and its TorchScript export.

The depth-from-transmission conversion is checked against values computed by hand; the pipeline against the
network it wraps; the artifact (``dehaze export`` of a random ``corun_tiny`` checkpoint, traced once at batch 1)
against the eager pipeline at batch 3 and at 320×480, as DCMPNet's artifact is in test_export.py.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from commands.export import add_arguments, run
from model.corun_checkpoint import save_corun_checkpoint
from model.corun_pipeline import DEPTH_SCALE, CorunPipeline, build_corun_pipeline, transmission_to_depth
from model.export import artifact_info, check_export, file_sha256, load_artifact
from model.families import build_inference_pipeline, family_of, variant_names
from model.pipeline import DehazePipeline


@pytest.fixture(scope="module")
def tiny() -> CorunPipeline:
    torch.manual_seed(0)
    return build_corun_pipeline("corun_tiny")


@pytest.fixture(scope="module")
def weights(tiny: CorunPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_corun_checkpoint(tmp_path_factory.mktemp("corun") / "corun_tiny.pt", tiny.net, "corun_tiny", {})


@pytest.fixture(scope="module")
def artifact(weights: Path) -> Path:
    """``dehaze export --weights corun_tiny.pt --variant corun_tiny``: traced at 1×3×64×64."""
    out = weights.with_name("corun_tiny.ts.pt")
    assert run(_cli("--weights", str(weights), "--out", str(out), "--variant", "corun_tiny")) == 0
    return out


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# --- depth from transmission ------------------------------------------------------------------------------------


def test_depth_from_transmission_by_hand() -> None:
    # d = -ln(t) / -ln(0.05); -ln(0.05) = ln 20 = 2.995732...
    t = torch.tensor([1.0, 0.05, math.exp(-1.0), 0.5, 0.25, 0.01, 1.5])
    expected = [0.0, 1.0, 1 / 2.995732, 0.693147 / 2.995732, 1.386294 / 2.995732, 1.0, 0.0]
    assert math.isclose(DEPTH_SCALE, 2.995732, abs_tol=1e-6)
    assert transmission_to_depth(t).tolist() == pytest.approx(expected, abs=1e-6)


def test_depth_is_monotone_and_the_same_for_every_tile() -> None:
    """A fixed scale: a pixel's depth depends on its transmission only, not on the rest of the image."""
    t = torch.linspace(0.05, 0.999, 100).view(1, 1, 10, 10)
    depth = transmission_to_depth(t).flatten()
    assert bool((depth[1:] < depth[:-1]).all())  # more transmission = nearer
    assert torch.equal(transmission_to_depth(t[..., :4, :4]), transmission_to_depth(t)[..., :4, :4])


# --- the pipeline ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (8, 8)])
def test_pipeline_follows_the_contract(tiny: CorunPipeline, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        dehazed, depth = tiny(x)
        raw, trans = tiny.net(x)
    assert dehazed.shape == (2, 3, *size) and depth.shape == (2, 1, *size)
    assert torch.equal(dehazed, raw.clamp(0, 1)) and torch.equal(depth, transmission_to_depth(trans))
    assert float(depth.min()) >= 0 and float(depth.max()) <= 1


def test_families_share_one_namespace() -> None:
    names = variant_names()
    assert len(names) == len(set(names)) and {"corun", "corun_small", "corun_tiny", "dcmpnet_tiny"} <= set(names)
    assert family_of("corun_small") == "corun" and family_of("dcmpnet_small") == "dcmpnet"
    assert isinstance(build_inference_pipeline("corun_tiny"), CorunPipeline)
    assert isinstance(build_inference_pipeline("dcmpnet_tiny"), DehazePipeline)
    with pytest.raises(ValueError, match=r"corun_tiny.*dcmpnet_tiny"):
        family_of("nope")


# --- the artifact ----------------------------------------------------------------------------------------------------


def test_artifact_records_the_corun_variant(artifact: Path, weights: Path) -> None:
    assert artifact_info(artifact) == {
        "variant": "corun_tiny",
        "weights_sha256": file_sha256(weights),
        "licence": "MIT",
        "dtype": "float32",
    }


def test_artifact_traced_at_batch_one_runs_at_batch_three_and_320x480(tiny: CorunPipeline, artifact: Path) -> None:
    traced = load_artifact(artifact)
    assert check_export(tiny, traced, [(37, 53)], [3]) < 1e-4
    assert check_export(tiny, traced, [(320, 480)], [1]) < 1e-4


def test_artifact_pads_inside_for_sizes_off_the_multiple_of_eight(artifact: Path) -> None:
    traced = load_artifact(artifact)
    with torch.inference_mode():
        dehazed, depth = traced(torch.rand(2, 3, 2, 300))
    assert dehazed.shape == (2, 3, 2, 300) and depth.shape == (2, 1, 2, 300)
    assert float(dehazed.min()) >= 0 and float(dehazed.max()) <= 1
    assert float(depth.min()) >= 0 and float(depth.max()) <= 1


def test_export_command_checks_the_corun_variant(weights: Path, tmp_path: Path) -> None:
    assert run(_cli("--weights", str(weights), "--out", str(tmp_path / "x.pt"), "--variant", "corun_small")) == 1
    assert run(_cli("--random-init", "--variant", "corun_huge", "--out", str(tmp_path / "y.pt"))) == 2
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
