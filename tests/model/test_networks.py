"""Tests for Φ (model/dcmpnet.py), Ψ (model/depthnet.py), their parts, the variants and the pipeline.

The paper-size variant is only built (keys, shapes, parameter counts) and run once at 32 px; everything else
uses the tiny variant at small sizes.

Regenerate the golden tensor after an *intended* change with ``DEHAZE_REGEN_GOLDEN=1 pytest tests/model``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from model.checkpoint import to_official_keys
from model.dcmpnet import DCMPNet, relative_positions_log, window_partition, window_reverse
from model.depthnet import DepthNet
from model.drdb import DRDB
from model.pipeline import DehazePipeline, build_pipeline, depth_to_unit
from model.unet import UNet
from model.variants import DEFAULT_VARIANT, VARIANTS, PhiConfig, PsiConfig, get_variant

# The authors' released state dict (DIACMPN_dehaze_Indoor), key by key with shapes: a listing copied into the repo.
OFFICIAL_JSON = Path(__file__).parent / "golden" / "dcmpnet_state_dict.json"
GOLDEN = Path(__file__).parent / "golden" / "dcmpnet_tiny.pt"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny() -> tuple[DCMPNet, DepthNet]:
    torch.manual_seed(0)
    variant = get_variant("dcmpnet_tiny")
    return DCMPNet(variant.phi).eval(), DepthNet(variant.psi).eval()


@pytest.fixture(scope="module")
def paper() -> tuple[DCMPNet, DepthNet]:
    torch.manual_seed(0)
    variant = get_variant("dcmpnet")
    return DCMPNet(variant.phi).eval(), DepthNet(variant.psi).eval()


# --- variants ---------------------------------------------------------------------------------------------------


def test_registry_names_and_default() -> None:
    assert set(VARIANTS) == {"dcmpnet", "dcmpnet_small", "dcmpnet_t", "dcmpnet_tiny", "dcmpnet_t_tiny"}
    assert DEFAULT_VARIANT == "dcmpnet_t"
    for name in VARIANTS:
        assert get_variant(name).name == name


def test_unknown_variant_lists_choices() -> None:
    with pytest.raises(ValueError, match="dcmpnet_small"):
        get_variant("dehazeformer")


def test_only_paper_variant_has_internal_depth_and_legacy_modules() -> None:
    paper = get_variant("dcmpnet")
    assert paper.phi.internal_depth and paper.phi.legacy_modules and paper.depth_convention == "disparity"
    for name in ("dcmpnet_small", "dcmpnet_t", "dcmpnet_tiny", "dcmpnet_t_tiny"):
        phi = get_variant(name).phi
        assert not phi.internal_depth and not phi.legacy_modules


@pytest.mark.parametrize(
    "kwargs",
    [
        {"embed_dims": (24, 48, 96, 32, 24)},
        {"num_heads": (5, 4, 6, 1, 1)},
        {"depths": (8, 8, 8, 4)},
        {"attn_ratios": (1.5, 0.5, 0.5, 0.0, 0.0)},
    ],
)
def test_bad_phi_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PhiConfig(**kwargs)


def test_bad_psi_config_raises() -> None:
    with pytest.raises(ValueError):
        PsiConfig(widths=(8, 16, 32))  # type: ignore[arg-type]


# --- the paper-size layout against the authors' state dict -----------------------------------------------------


def _official() -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    entries = json.loads(OFFICIAL_JSON.read_text())
    phi = next(v for k, v in entries.items() if k.startswith("dehaze_net"))
    psi = next(v for k, v in entries.items() if k.startswith("depth_net"))
    return phi, psi


def test_paper_variant_has_exactly_the_official_keys_and_shapes(paper: tuple[DCMPNet, DepthNet]) -> None:
    phi, psi = paper
    official_phi, official_psi = _official()
    ours_phi = {k: list(v.shape) for k, v in to_official_keys(phi.state_dict()).items()}
    ours_psi = {k: list(v.shape) for k, v in psi.state_dict().items()}
    assert len(ours_phi) == 788 and len(ours_psi) == 114
    assert ours_phi == official_phi
    assert ours_psi == official_psi


def test_paper_variant_parameter_counts(paper: tuple[DCMPNet, DepthNet]) -> None:
    phi, psi = paper
    assert _params(phi) == 17_358_337
    assert _params(psi) == 1_980_283
    assert phi.dpn is not None and _params(phi.dpn) == 1_980_283
    assert _params(phi.Unet1) == 13_395_459
    assert _params(phi.drdb) == 93_922


def test_paper_variant_attention_placement(paper: tuple[DCMPNet, DepthNet]) -> None:
    phi, _ = paper
    expected = {"legm1": [6, 7], "legm2": [4, 5, 6, 7], "legm3": [2, 3, 4, 5, 6, 7], "legm4": [], "legm5": []}
    for stage, attn_blocks in expected.items():
        blocks = getattr(phi, stage).blocks
        assert [i for i, b in enumerate(blocks) if b.attn.QK is not None] == attn_blocks
        assert [b.attn.shift_size for b in blocks] == [0, 4] * (len(blocks) // 2)


def test_paper_variant_runs_with_internal_depth_at_32px(paper: tuple[DCMPNet, DepthNet]) -> None:
    phi, _ = paper
    x = torch.rand(1, 3, 32, 34)
    with torch.inference_mode():
        out = phi(x)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


# --- parts -------------------------------------------------------------------------------------------------------


def test_drdb_shapes_and_channels() -> None:
    block = DRDB(3, growth=4, layers=2)
    assert block.Dcov2.in_channels == 7 and block.conv.in_channels == 11
    x = torch.randn(2, 3, 5, 7)
    assert block(x).shape == x.shape


def test_unet_returns_three_scales() -> None:
    d1, d2, d3 = UNet(base=2)(torch.rand(1, 3, 36, 44))
    assert d1.shape == (1, 4, 9, 11) and d2.shape == (1, 2, 18, 22) and d3.shape == (1, 3, 36, 44)


def test_window_partition_round_trip_keeps_batch_dynamic() -> None:
    x = torch.randn(3, 8, 12, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (3 * 6, 16, 5)
    assert torch.equal(window_reverse(windows, 4, 8, 12), x)


def test_relative_positions_are_log_spaced() -> None:
    rel = relative_positions_log(8)
    assert rel.shape == (64, 64, 2)
    assert torch.allclose(rel[0, 63], torch.full((2,), -math.log(8.0)))
    assert torch.equal(rel[5, 5], torch.zeros(2))


# --- tiny variant: Φ and Ψ -------------------------------------------------------------------------------------


def test_phi_output_shape_equals_input_at_odd_size(tiny: tuple[DCMPNet, DepthNet]) -> None:
    phi, psi = tiny
    x = torch.rand(2, 3, 37, 53)
    with torch.inference_mode():
        out, feats = phi.forward_with_features(x, psi(x))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    dims = phi.cfg.embed_dims
    assert [f.shape[1] for f in feats] == [dims[2], dims[1], dims[0]]
    assert [f.shape[-1] for f in feats] == [14, 28, 56]  # 53 padded to 56, then /4, /2, /1


def test_phi_requires_depth_of_right_shape(tiny: tuple[DCMPNet, DepthNet]) -> None:
    phi, _ = tiny
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="depth"):
        phi(x)
    with pytest.raises(ValueError, match="depth"):
        phi(x, torch.rand(1, 1, 40, 39))
    with pytest.raises(ValueError, match="px"):
        phi(torch.rand(1, 3, 16, 40), torch.rand(1, 1, 16, 40))


def test_unet_features_match_forward_features(tiny: tuple[DCMPNet, DepthNet]) -> None:
    phi, psi = tiny
    x = torch.rand(1, 3, 36, 40)
    with torch.inference_mode():
        _, feats = phi.forward_with_features(x, psi(x))
        again = phi.unet_features(x)
    for a, b in zip(feats, again, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (2, 300)])
def test_psi_output_is_one_channel_at_input_size(tiny: tuple[DCMPNet, DepthNet], size: tuple[int, int]) -> None:
    _, psi = tiny
    with torch.inference_mode():
        depth = psi(torch.rand(2, 3, *size))
    assert depth.shape == (2, 1, *size) and bool(torch.isfinite(depth).all())


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    variant = get_variant("dcmpnet_tiny")
    phi, psi = DCMPNet(variant.phi).train(), DepthNet(variant.psi).train()
    x = torch.rand(2, 3, 32, 36)
    out = phi(x, psi(x))
    (out - x).abs().mean().backward()
    for name, module in (("phi", phi), ("psi", psi)):
        grads = {n: p.grad for n, p in module.named_parameters()}
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values()), name
        # A unit whose ReLU is dead at init gets an exact zero gradient (e.g. the 1-channel DRDB); most must not.
        nonzero = sum(bool(g.abs().sum() > 0) for g in grads.values() if g is not None)
        assert nonzero >= 0.8 * len(grads), f"{name}: only {nonzero}/{len(grads)} parameters got a gradient"


def test_eval_mode_is_per_sample(tiny: tuple[DCMPNet, DepthNet]) -> None:
    phi, psi = tiny
    x = torch.rand(2, 3, 32, 40)
    with torch.inference_mode():
        both = phi(x, psi(x))
        first = phi(x[:1], psi(x[:1]))
    assert torch.allclose(both[:1], first, atol=1e-5)


def _golden_outputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1234)
    variant = get_variant("dcmpnet_tiny")
    phi, psi = DCMPNet(variant.phi).eval(), DepthNet(variant.psi).eval()
    x = torch.rand(1, 3, 33, 38, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        depth = psi(x)
        return {"input": x, "depth": depth, "dehazed": phi(x, depth)}


def test_golden_tensor() -> None:
    got = _golden_outputs()
    if os.environ.get("DEHAZE_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        torch.save(got, GOLDEN)
    want = torch.load(GOLDEN, weights_only=True)
    assert torch.equal(got["input"], want["input"])
    assert torch.allclose(got["depth"], want["depth"], atol=1e-5, rtol=0)
    assert torch.allclose(got["dehazed"], want["dehazed"], atol=1e-5, rtol=0)


# --- pipeline ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (2, 300), (37, 53), (300, 2)])
def test_pipeline_any_size(size: tuple[int, int]) -> None:
    pipeline = build_pipeline("dcmpnet_tiny")
    with torch.inference_mode():
        dehazed, depth = pipeline(torch.rand(2, 3, *size))
    assert dehazed.shape == (2, 3, *size) and depth.shape == (2, 1, *size)
    for t in (dehazed, depth):
        assert bool(torch.isfinite(t).all()) and float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_pipeline_uses_psi_depth_for_phi(tiny: tuple[DCMPNet, DepthNet]) -> None:
    phi, psi = tiny
    pipeline = DehazePipeline(phi, psi).eval()
    x = torch.rand(1, 3, 40, 44)
    with torch.inference_mode():
        dehazed, depth = pipeline(x)
        raw = psi(x)
        assert torch.equal(dehazed, phi(x, raw).clamp(0, 1))
    assert torch.equal(depth, raw.clamp(0, 1))


def test_depth_to_unit_flips_disparity() -> None:
    raw = torch.tensor([-0.5, 0.25, 2.0])
    assert torch.equal(depth_to_unit(raw, False), torch.tensor([0.0, 0.25, 1.0]))
    assert torch.equal(depth_to_unit(raw, True), torch.tensor([1.0, 0.75, 0.0]))


def test_pipeline_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        build_pipeline("dcmpnet_tiny")(torch.rand(1, 1, 8, 8))
