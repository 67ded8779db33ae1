"""The DehazeFormer warm start of Φ (model.warm_start): golden outputs, refusals and the pass-through fusions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.dcmpnet import DCMPNet
from model.variants import get_variant
from model.warm_start import (
    BACKBONE_PREFIXES,
    DEHAZEFORMER_RENAMES,
    WarmStartError,
    backbone_parameter_names,
    warm_start_phi,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / "../shared").resolve()
DEHAZEFORMER_T = SHARED / "pretrained/dehazeformer-t-its/dehazeformer-t.pth"
GOLDEN = SHARED / "design/dehazeformer_t_golden_forward.json"


def golden_input(shape: list[int]) -> torch.Tensor:
    """The golden file's input: ``0.5 + 0.45·sin(0.37 i)·cos(0.011 i)`` over the flat N,C,H,W index, float64 -> 32."""
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    return torch.from_numpy((0.5 + 0.45 * np.sin(0.37 * i) * np.cos(0.011 * i)).astype(np.float32).reshape(shape))


def scramble_added_parts(phi: DCMPNet, seed: int) -> None:
    """Random values in every tensor of Φ that the DehazeFormer does not fill (U-Net, DRDB, MSAAM, fusions)."""
    gen = torch.Generator().manual_seed(seed)
    backbone = backbone_parameter_names(phi)
    with torch.no_grad():
        for name, p in phi.named_parameters():
            if name not in backbone:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def as_dehazeformer_file(phi: DCMPNet, path: Path) -> Path:
    """Φ's backbone saved the way the DehazeFormer authors save a checkpoint (names, ``module.``, ``state_dict``)."""
    back = {to: frm for frm, to in DEHAZEFORMER_RENAMES.items()}
    state = {}
    for key, value in phi.state_dict().items():
        if key.startswith(BACKBONE_PREFIXES):
            name = next((back[p] + key[len(p) :] for p in back if key.startswith(p)), key)
            state[f"module.{name}"] = value.clone()
    torch.save({"state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def golden() -> dict:
    if not DEHAZEFORMER_T.is_file() or not GOLDEN.is_file():
        pytest.skip(f"shared DehazeFormer-T weights or golden file not found under {SHARED}")
    return json.loads(GOLDEN.read_text())


def test_warm_started_phi_reproduces_dehazeformer_t_golden_outputs(golden: dict) -> None:
    torch.manual_seed(0)
    phi = DCMPNet(get_variant("dcmpnet_t").phi)
    scramble_added_parts(phi, seed=1)
    assert warm_start_phi(phi, DEHAZEFORMER_T) == 258
    phi.eval()
    gen = torch.Generator().manual_seed(2)
    for case in golden["cases"]:
        x = golden_input(case["input_shape"])
        n, _, h, w = x.shape
        depth = torch.rand((n, 1, h, w), generator=gen) * 3.0 - 1.0  # any depth: the fusions must ignore it
        with torch.no_grad():
            y = phi(x, depth)
        assert list(y.shape) == case["output_shape"]
        flat = y.flatten()
        for index, value in case["points"]:
            assert abs(flat[index].item() - value) < 1e-5, (case["input_shape"], index)
        for stat in ("mean", "std", "min", "max"):
            assert abs(getattr(y, stat)().item() - case[stat]) < 1e-5, (case["input_shape"], stat)


def test_added_parts_do_not_leak_in_at_initialisation(tmp_path: Path) -> None:
    source = DCMPNet(get_variant("dcmpnet_t_tiny").phi)
    path = as_dehazeformer_file(source, tmp_path / "tiny_dehazeformer.pth")
    x = torch.rand(2, 3, 40, 44)
    outputs = []
    for seed in (3, 4):
        phi = DCMPNet(get_variant("dcmpnet_t_tiny").phi)
        scramble_added_parts(phi, seed)
        warm_start_phi(phi, path)
        with torch.no_grad():
            outputs.append(phi.eval()(x, torch.randn(2, 1, 40, 44)))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    # ... and the added parts are still in the graph: moving one fusion weight off identity changes the output.
    with torch.no_grad():
        phi.conv1.weight[:, -1] += 1.0
        assert not torch.allclose(phi(x, torch.randn(2, 1, 40, 44)), outputs[1], atol=1e-3)


def test_a_tensor_of_another_shape_is_refused_by_name(tmp_path: Path) -> None:
    path = as_dehazeformer_file(DCMPNet(get_variant("dcmpnet_t_tiny").phi), tmp_path / "f.pth")
    state = torch.load(path, weights_only=True)["state_dict"]
    state["module.layer2.blocks.0.mlp.mlp.0.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save({"state_dict": state}, path)
    with pytest.raises(WarmStartError, match=r"'legm2\.blocks\.0\.mlp\.mlp\.0\.weight' has shape \(3, 3, 1, 1\)"):
        warm_start_phi(DCMPNet(get_variant("dcmpnet_t_tiny").phi), path)


def test_missing_and_unexpected_tensors_are_refused(tmp_path: Path) -> None:
    path = as_dehazeformer_file(DCMPNet(get_variant("dcmpnet_t_tiny").phi), tmp_path / "f.pth")
    state = torch.load(path, weights_only=True)["state_dict"]
    del state["module.fusion1.mlp.0.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(WarmStartError, match=r"'mfm1\.mlp\.0\.weight' is missing"):
        warm_start_phi(DCMPNet(get_variant("dcmpnet_t_tiny").phi), path)
    torch.save({"state_dict": {**state, "module.head.weight": torch.zeros(1)}}, path)
    with pytest.raises(WarmStartError, match=r"'head\.weight' has no place"):
        warm_start_phi(DCMPNet(get_variant("dcmpnet_t_tiny").phi), path)


def test_a_phi_without_the_dehazeformer_head_is_refused(golden: dict) -> None:
    with pytest.raises(WarmStartError, match="soft_reconstruction"):
        warm_start_phi(DCMPNet(get_variant("dcmpnet_small").phi), DEHAZEFORMER_T)


def test_the_authors_dcmpnet_layout_is_unchanged() -> None:
    cfg = get_variant("dcmpnet").phi
    assert not cfg.soft_reconstruction and not cfg.decoder_from_legm3
    assert DCMPNet(cfg).patch_unembed.proj[0].out_channels == 3


def test_inputs_weighed_by_zero_are_pruned_with_the_same_output(tmp_path: Path) -> None:
    from model.checkpoint import load_pipeline_from_weights, save_checkpoint
    from model.depthnet import DepthNet

    variant = get_variant("dcmpnet_t_tiny")
    phi = DCMPNet(variant.phi)
    scramble_added_parts(phi, seed=5)
    warm_start_phi(phi, as_dehazeformer_file(DCMPNet(variant.phi), tmp_path / "d.pth"))
    path = save_checkpoint(tmp_path / "w.pt", phi, DepthNet(variant.psi), variant, {}, depth_convention="depth")
    served = load_pipeline_from_weights(path)
    assert served.phi.pruned == {"unet", "depth", "msaam"}
    x = torch.rand(2, 3, 37, 45)
    full = phi.eval()
    with torch.no_grad():
        assert torch.equal(served.phi(x, torch.rand(2, 1, 37, 45)), full(x, torch.rand(2, 1, 37, 45)))
        traced = torch.jit.trace(served, x, check_trace=False)
        assert torch.equal(traced(x)[0], served(x)[0])
    assert "Unet1" not in traced.phi.code and "msaam" not in traced.phi.code and "drdb" not in traced.phi.code


def test_an_input_in_use_is_never_pruned() -> None:
    phi = DCMPNet(get_variant("dcmpnet_t_tiny").phi)
    assert phi.pruned == frozenset()  # training computes everything
    from model.warm_start import pass_through_fusions

    pass_through_fusions(phi)
    with torch.no_grad():
        phi.conv_d2.weight[0, 0] = 1e-3  # MSAAM reaches the decoder again
        phi.conv1.weight[0, -1] = 1e-3  # and so does the depth
    assert phi.prune_unused_inputs() == {"unet"}
    x = torch.rand(1, 3, 40, 40)
    d = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        pruned = phi(x, d)
        phi.pruned = frozenset()
        assert torch.allclose(pruned, phi(x, d), atol=1e-6)
