"""Tests for CORUN (model/corun.py): the released layout and function, the variants, and the model's contract.

The paper-size variant is built for its keys and parameter count and run once, on the 64×96 golden input; every
other test uses ``corun_tiny`` (or ``corun_small`` for its cost) at small sizes. Nothing outside the repository is
read: the authors' state-dict listing is copied to ``golden/corun_state_dict.json`` and the golden outputs below.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from model.corun import (
    CORUN,
    CORUN_VARIANTS,
    MSMSA,
    SGDM,
    STEP_INIT,
    TGDM,
    CorunConfig,
    create_corun,
    get_corun_config,
    pad_to_multiple,
)
from model.variants import VARIANTS

# Key -> shape of the released ``CORUN(depth=4)`` state dict (cnyvfang/CORUN-Colabator, HEAD b1103fe), copied
# from the project's design notes (corun_official_state_dict.json, a listing of the released checkpoint).
OFFICIAL_KEYS = Path(__file__).parent / "golden" / "corun_state_dict.json"

# The released network's outputs for deterministic weights and input (the rule: the seeded weights and input built
# by _golden_state and the test below), copied from the project's design notes (corun_golden_forward.json). J is
# the final stage's image, T the final T̂; stds are population stds; stage means are final stage first, as the
# released code lists them.
GOLDEN_J_MEAN, GOLDEN_J_STD = 0.3329271078109741, 0.28888556361198425
GOLDEN_T_MEAN, GOLDEN_T_STD = 0.7309028506278992, 0.09018675982952118
GOLDEN_J_POINTS = {  # (channel, row, column) -> value
    (0, 0, 0): 0.17255565524101257,
    (1, 0, 0): 0.4928955137729645,
    (2, 0, 0): 0.5252997875213623,
    (0, 10, 20): 0.47958675026893616,
    (1, 10, 20): 0.07679902017116547,
    (2, 10, 20): 0.002332186559215188,
    (0, 31, 47): 0.693682074546814,
    (1, 31, 47): 0.7022103071212769,
    (2, 31, 47): 0.26732391119003296,
    (0, 63, 95): 0.8768276572227478,
    (1, 63, 95): 0.4645378589630127,
    (2, 63, 95): 0.23930495977401733,
    (0, 40, 70): 0.0001956119667738676,
    (1, 40, 70): 0.0036465502344071865,
    (2, 40, 70): 0.3551323711872101,
}
GOLDEN_T_POINTS = {  # (row, column) -> value
    (0, 0): 0.8050019145011902,
    (10, 20): 0.8044155240058899,
    (31, 47): 0.6154773831367493,
    (63, 95): 0.7294656038284302,
    (40, 70): 0.8067716956138611,
}
GOLDEN_STAGE_MEANS = [0.3329271078109741, 0.3359474837779999, 0.3483882546424866, 0.3788423538208008]

PARAMS = {"corun": 18_674_262, "corun_small": 1_852_424, "corun_tiny": 59_184}
CORUN_MACS_256 = 71_476_346_880  # FlopCounterMode FLOPs / 2 at 1×3×256×256; CORUN.md measured 71.5 G


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _official_keys() -> dict[str, list[int]]:
    return json.loads(OFFICIAL_KEYS.read_text())["keys"]


@pytest.fixture(scope="module")
def paper() -> CORUN:
    torch.manual_seed(0)
    return create_corun("corun").eval()


@pytest.fixture(scope="module")
def tiny() -> CORUN:
    torch.manual_seed(0)
    return create_corun("corun_tiny").eval()


# --- registry and configuration ----------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(CORUN_VARIANTS) == {"corun", "corun_small", "corun_tiny"}
    assert get_corun_config("corun") == CorunConfig()
    assert not set(CORUN_VARIANTS) & set(VARIANTS)  # DCMPNet's registry is separate and unchanged


def test_unknown_variant_lists_choices() -> None:
    with pytest.raises(ValueError, match="corun_small"):
        get_corun_config("corun_huge")


@pytest.mark.parametrize(
    "kwargs", [{"stages": 1}, {"dim": 15}, {"dim": 0}, {"blocks": (1, 1, 1)}, {"blocks": (1, 0, 1, 1)}, {"ffn_mult": 0}]
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CorunConfig(**kwargs)


def test_attention_heads_must_divide_width() -> None:
    with pytest.raises(ValueError, match="heads"):
        MSMSA(30, 4)


# --- the paper-size layout against the authors' state dict and function ---------------------------------------


def test_paper_variant_has_exactly_the_official_keys_and_shapes(paper: CORUN) -> None:
    official = _official_keys()
    ours = {k: list(v.shape) for k, v in paper.state_dict().items()}
    assert len(ours) == 722
    assert ours == official
    assert list(ours) == list(official)  # same order too (basic, first, last as registered by the authors)
    assert _params(paper) == json.loads(OFFICIAL_KEYS.read_text())["parameters"] == PARAMS["corun"]


def test_official_shaped_state_dict_loads_strictly() -> None:
    net = CORUN(get_corun_config("corun"))
    state = {k: torch.full(shape, 0.25) for k, shape in _official_keys().items()}
    net.load_state_dict(state, strict=True)
    assert net.first.trans_prox.step_lambda.item() == 0.25


def test_paper_variant_structure(paper: CORUN) -> None:
    assert len(paper.basic) == 2 and paper.last.trans_net is None and paper.first.trans_net is not None
    mst = paper.first.dehaze_net
    assert [layer[0].blocks[0][0].heads for layer in mst.encoder_layers] == [1, 2, 4]
    assert mst.bottleneck.blocks[0][0].heads == 8
    assert [layer[1].out_channels for layer in mst.decoder_layers] == [120, 60, 30]
    cpmm = _params(mst)
    assert 2_667_000 <= cpmm <= 2_668_000  # CORUN.md: each CPMM has 2.667-2.668 M parameters
    assert paper.last.dehaze_prox.step_lambda.item() == pytest.approx(STEP_INIT) == pytest.approx(0.5744, abs=1e-4)


def _golden_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """The deterministic weights of CORUN.md's "Golden forward": keys in sorted order, key i -> a sine pattern."""
    state = {}
    for i, key in enumerate(sorted(shapes)):
        shape = shapes[key]
        n = math.prod(shape)
        if key.endswith("step_lambda"):
            value = torch.full(shape, 0.5744)
        elif key.endswith("rescale") or key.endswith("norm.weight"):
            value = torch.ones(shape)
        elif key.endswith("norm.bias"):
            value = torch.zeros(shape)
        else:
            fan_in = n // shape[0] if len(shape) > 1 else 1
            k = torch.arange(n, dtype=torch.float64)
            value = (torch.sin(0.7 * k + i) / math.sqrt(fan_in)).float().reshape(shape)
        state[key] = value
    return state


def golden_input() -> torch.Tensor:
    """1×3×64×96, channel c at row y, column x = 0.5 + 0.35·sin(0.11·x + 0.07·y + c)."""
    y = torch.arange(64, dtype=torch.float64)[:, None]
    x = torch.arange(96, dtype=torch.float64)[None, :]
    return torch.stack([0.5 + 0.35 * torch.sin(0.11 * x + 0.07 * y + c) for c in range(3)])[None].float()


def test_forward_reproduces_the_released_golden_outputs() -> None:
    net = CORUN(get_corun_config("corun")).eval()
    net.load_state_dict(_golden_state(_official_keys()), strict=True)
    with torch.inference_mode():
        images, transmissions = net.forward_stages(golden_input())
    dehazed, trans = images[-1], transmissions[-1]  # what forward returns (test_forward_returns_the_last_stage)
    assert dehazed.shape == (1, 3, 64, 96) and trans.shape == (1, 1, 64, 96)
    assert dehazed.mean().item() == pytest.approx(GOLDEN_J_MEAN, abs=1e-4)
    assert dehazed.std(unbiased=False).item() == pytest.approx(GOLDEN_J_STD, abs=1e-4)
    assert trans.mean().item() == pytest.approx(GOLDEN_T_MEAN, abs=1e-4)
    assert trans.std(unbiased=False).item() == pytest.approx(GOLDEN_T_STD, abs=1e-4)
    for (c, y, x), want in GOLDEN_J_POINTS.items():
        assert dehazed[0, c, y, x].item() == pytest.approx(want, abs=1e-4), (c, y, x)
    for (y, x), want in GOLDEN_T_POINTS.items():
        assert trans[0, 0, y, x].item() == pytest.approx(want, abs=1e-4), (y, x)
    stage_means = [j.mean().item() for j in reversed(images)]
    assert stage_means == pytest.approx(GOLDEN_STAGE_MEANS, abs=1e-4)


# --- variants: size and cost -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["corun_small", "corun_tiny"])
def test_variant_parameter_counts(name: str) -> None:
    assert _params(create_corun(name)) == PARAMS[name]


def _macs_256(net: CORUN) -> int:
    """MACs of a batch-1 pass at 256², counted at 64×64: every operator's cost is linear in H·W (the attention
    is channel × channel), so the count scales exactly by 16 while the counter's per-operator overhead stays."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.rand(1, 3, 64, 64))
    return counter.get_total_flops() * 16 // 2


@pytest.mark.slow
def test_small_variant_costs_a_tenth_of_the_paper_size() -> None:
    macs = _macs_256(create_corun("corun_small").eval())
    assert macs == 7_185_235_968
    assert 0.08 <= macs / CORUN_MACS_256 <= 0.12


# --- closed-form steps -------------------------------------------------------------------------------------------


def _hazy_scene(shape: tuple[int, ...] = (2, 3, 9, 11)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    scene = torch.rand(shape, generator=g) * 0.9
    trans = 0.1 + 0.85 * torch.rand(shape[0], 1, *shape[2:], generator=g)
    return scene * trans + 1.0 - trans, scene, trans  # A = 1


def test_gradient_steps_keep_a_consistent_solution_fixed() -> None:
    hazy, scene, trans = _hazy_scene()
    with torch.no_grad():
        assert torch.allclose(SGDM()(hazy, scene, trans), scene, atol=1e-5)
        assert torch.allclose(TGDM()(hazy, scene, trans), trans, atol=1e-5)


def test_sgdm_is_the_exact_minimiser() -> None:
    hazy, scene, trans = _hazy_scene()
    prev = torch.rand_like(scene) * 0.2 + 0.4
    gamma = 0.7
    step = SGDM(gamma)
    with torch.no_grad():
        j = step(hazy, prev, trans)
    j.requires_grad_(True)
    objective = ((hazy - j * trans - (1 - trans)) ** 2).sum() + gamma * ((j - prev) ** 2).sum()
    (grad,) = torch.autograd.grad(objective, j)
    inside = (j > 0) & (j < 1)  # the clamp makes the gradient non-zero only where it bit
    assert bool(inside.any()) and float(grad[inside].abs().max()) < 1e-4


def test_tgdm_formula_clamp_and_zero_guard() -> None:
    hazy = torch.tensor([0.9, 0.8, 0.7]).view(1, 3, 1, 1)
    scene = torch.tensor([0.5, 1.0, 0.2]).view(1, 3, 1, 1)  # 1 − Ĵ = 0 in the green channel
    prev = torch.full((1, 1, 1, 1), 0.6)
    lam = 0.5744
    clear = torch.tensor([0.5, 1e-7, 0.8])
    want = ((0.1 + 0.2 + 0.3) + lam * 0.6 * (1 / clear).sum()) / (clear + lam / clear).sum()
    with torch.no_grad():
        got = TGDM(lam)(hazy, scene, prev)
        assert got.item() == pytest.approx(min(max(want.item(), 0.05), 0.999), rel=1e-5)
        saturated = TGDM(lam)(torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1), torch.ones(1, 1, 1, 1))
    assert saturated.item() == pytest.approx(0.999)  # T̂ = 1 is clamped


# --- the model's contract -----------------------------------------------------------------------------------------


def test_padding_reflects_where_it_can_and_replicates_beyond() -> None:
    x = torch.arange(2 * 37 * 53, dtype=torch.float32).view(1, 2, 37, 53)
    assert torch.equal(pad_to_multiple(x), F.pad(x, [0, 3, 0, 3], mode="reflect"))
    y = torch.arange(3.0).view(1, 1, 1, 3)  # width 3 needs 5: 2 reflected, then 3 replicated; height 1: replicated
    row = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.equal(pad_to_multiple(y), row.expand(1, 1, 8, 8))
    z = torch.rand(1, 3, 16, 24)
    assert torch.equal(pad_to_multiple(z), z)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (2, 300), (300, 2), (16, 24)])
def test_any_size_gives_finite_outputs_of_input_size(tiny: CORUN, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        dehazed, trans = tiny(x)
    assert dehazed.shape == (2, 3, *size) and trans.shape == (2, 1, *size)
    assert bool(torch.isfinite(dehazed).all()) and bool(torch.isfinite(trans).all())
    assert float(trans.min()) >= 0.05 and float(trans.max()) <= 0.999


def test_crop_equals_the_unpadded_network_at_multiples_of_eight(tiny: CORUN) -> None:
    x = torch.rand(1, 3, 24, 40)
    with torch.inference_mode():
        dehazed, trans = tiny(x)
        images, transmissions = tiny.unfold(x)
    assert len(images) == len(transmissions) == 3
    assert torch.equal(dehazed, images[-1]) and torch.equal(trans, transmissions[-1])


def test_forward_returns_the_last_stage(tiny: CORUN) -> None:
    x = torch.rand(2, 3, 19, 30)
    with torch.inference_mode():
        dehazed, trans = tiny(x)
        images, transmissions = tiny.forward_stages(x)
    assert [j.shape for j in images] == [x.shape] * 3 and [t.shape for t in transmissions] == [(2, 1, 19, 30)] * 3
    assert torch.equal(dehazed, images[-1]) and torch.equal(trans, transmissions[-1])


def test_eval_mode_is_per_sample(tiny: CORUN) -> None:
    x = torch.rand(3, 3, 21, 30)
    with torch.inference_mode():
        both = tiny(x)
        one = tiny(x[1:2])
    for a, b in zip(both, one, strict=True):
        assert torch.allclose(a[1:2], b, atol=1e-6)


def test_rejects_non_rgb(tiny: CORUN) -> None:
    with pytest.raises(ValueError, match="N×3×H×W"):
        tiny(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="N×3×H×W"):
        tiny(torch.rand(3, 8, 8))


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = create_corun("corun_tiny").train()
    x = torch.rand(2, 3, 20, 28)
    dehazed, trans = net(x)
    ((dehazed - x).abs().mean() + (trans - 0.5).abs().mean()).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    missing = [n for n, g in grads.items() if g is None or not bool(torch.isfinite(g).all())]
    assert not missing
    zero = [n for n, g in grads.items() if g is not None and float(g.abs().sum()) == 0.0]
    assert len(zero) <= 0.05 * len(grads), zero


@pytest.fixture(scope="module")
def traced_tiny(tiny: CORUN) -> torch.jit.ScriptModule:
    """``corun_tiny`` traced at batch 1 and 64×64, failing on any TracerWarning (a value frozen into the graph),
    as model/export.py does. At 64×64 every padding amount is zero at trace time; they must stay symbolic."""
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        traced = torch.jit.trace(tiny, torch.rand(1, 3, 64, 64), check_trace=False)
    frozen = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert not frozen
    return traced


@pytest.mark.parametrize("shape", [(3, 3, 320, 480), (3, 3, 37, 53), (2, 3, 5, 3)])
def test_traced_equals_eager_at_other_batch_sizes_and_sizes(
    tiny: CORUN, traced_tiny: torch.jit.ScriptModule, shape: tuple[int, int, int, int]
) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        for got, want in zip(traced_tiny(x), tiny(x), strict=True):
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5, rtol=0)
