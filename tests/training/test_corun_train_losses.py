"""CORUN's pre-training losses (training.corun_losses): each term measures what it claims and carries its weight."""

from __future__ import annotations

import pytest
import torch

from training.corun_losses import CorunLossWeights, asm_resynthesis, pretrain_losses, rehaze


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    clear = torch.rand(2, 3, 8, 8, generator=gen)
    trans = torch.rand(2, 1, 8, 8, generator=gen) * 0.9 + 0.05
    return clear, trans, rehaze(clear, trans)


def test_asm_term_is_zero_for_the_true_scene_and_transmission() -> None:
    clear, trans, hazy = _pair()
    assert float(asm_resynthesis(clear, trans, hazy)) == pytest.approx(0.0, abs=1e-7)
    assert float(asm_resynthesis(clear, trans * 0.5, hazy)) > 0.01
    with pytest.raises(ValueError, match="N×1×H×W"):
        asm_resynthesis(clear, trans.expand(2, 3, 8, 8), hazy)


def test_terms_and_weights() -> None:
    clear, trans, hazy = _pair()
    out = clear + 0.1
    mid = clear + 0.3
    terms = pretrain_losses([mid, out], [trans, trans], clear, hazy, CorunLossWeights(stage_l1=0.5))
    assert set(terms) == {"l1", "stage_l1", "asm", "perceptual"}
    assert float(terms["l1"]) == pytest.approx(0.1, abs=1e-6)
    assert float(terms["stage_l1"]) == pytest.approx(0.5 * 0.3, abs=1e-6)  # intermediate stages only
    expected_asm = 0.01 * float((0.1 * trans).expand_as(out).abs().mean())
    assert float(terms["asm"]) == pytest.approx(expected_asm, rel=1e-5)
    assert float(terms["perceptual"]) == 0.0  # no extractor given
    released = pretrain_losses([mid, out], [trans, trans], clear, hazy)
    assert float(released["stage_l1"]) == 0.0  # the released default: final stage only


def test_perceptual_term_is_the_contrastive_ratio() -> None:
    from training.losses import ContrastivePerceptualLoss

    clear, trans, hazy = _pair()
    out = (clear + hazy) / 2
    ratio = ContrastivePerceptualLoss(lambda x: [x], weights=(1.0,))
    terms = pretrain_losses([out], [trans], clear, hazy, CorunLossWeights(perceptual=0.2), ratio)
    expected = 0.2 * float((out - clear).abs().mean() / (out - hazy).abs().mean())
    assert float(terms["perceptual"]) == pytest.approx(expected, rel=1e-4)


def test_gradients_reach_the_output_and_the_transmission() -> None:
    clear, trans, hazy = _pair()
    out = (clear + 0.2).requires_grad_(True)
    t = trans.clone().requires_grad_(True)
    sum(pretrain_losses([out], [t], clear, hazy).values()).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="K >= 1"):
        pretrain_losses([out], [], clear, hazy)
    with pytest.raises(ValueError, match=">= 0"):
        CorunLossWeights(asm=-1.0)
