"""Tests for the DCMPNet losses (training/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import ContrastivePerceptualLoss, dehaze_loss, depth_loss, unet_feature_loss
from training.vgg import VGG19Features


def _two_level(x: torch.Tensor) -> list[torch.Tensor]:
    """A small hand-checkable extractor: the image and its 2×2 average pool."""
    return [x, F.avg_pool2d(x, 2)]


def _images(seed: int = 0, shape: tuple[int, ...] = (2, 3, 8, 8)) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(*shape, generator=gen) for _ in range(3))


def test_depth_loss_is_weighted_plus_plain_l1() -> None:
    pred = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]], requires_grad=True)
    target = torch.zeros(1, 1, 2, 2)
    coeff = torch.tensor([[[[0.0, 4.0], [0.0, 0.0]]]])
    loss = depth_loss(pred, target, coeff)
    assert loss.item() == pytest.approx(4.0 / 4 + 2.0 / 4)
    loss.backward()
    assert pred.grad is not None and float(pred.grad[0, 0, 0, 1]) == pytest.approx((4.0 + 1.0) / 4)


def test_depth_loss_with_unit_coefficients_is_twice_l1() -> None:
    pred, target = torch.rand(2, 1, 5, 6), torch.rand(2, 1, 5, 6)
    loss = depth_loss(pred, target, torch.ones(2, 1, 5, 6))
    assert torch.allclose(loss, 2 * (pred - target).abs().mean())


def test_dehaze_loss_broadcasts_coefficients_over_channels() -> None:
    out, gt, hazy = _images()
    coeff = torch.rand(2, 1, 8, 8) * 2
    expected = (coeff.expand(-1, 3, -1, -1) * (out - gt).abs()).mean()
    assert torch.allclose(dehaze_loss(out, gt, hazy, coeff), expected)


def test_dehaze_loss_adds_the_perceptual_term() -> None:
    out, gt, hazy = _images()
    coeff = torch.ones(2, 1, 8, 8)
    perceptual = ContrastivePerceptualLoss(_two_level, weights=(1.0, 0.5))
    total = dehaze_loss(out, gt, hazy, coeff, perceptual)
    assert torch.allclose(total, dehaze_loss(out, gt, hazy, coeff) + perceptual(out, gt, hazy))


def test_dehaze_loss_plain_l1_term_supervises_pixels_the_coefficients_ignore() -> None:
    out = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]]).expand(1, 3, 2, 2).clone().requires_grad_(True)
    gt, hazy = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    coeff = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]])  # all weight on a pixel that is already right
    assert dehaze_loss(out, gt, hazy, coeff).item() == 0.0
    loss = dehaze_loss(out, gt, hazy, coeff, l1_weight=0.5)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.5 + 0.5) / 4)
    loss.backward()
    assert out.grad is not None and float(out.grad[0, 0, 0, 1]) == pytest.approx(0.5 / 12)


def test_losses_reject_mismatched_shapes() -> None:
    out, gt, hazy = _images()
    with pytest.raises(ValueError):
        dehaze_loss(out, gt, hazy, torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError):
        depth_loss(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError):
        unet_feature_loss([torch.rand(1, 2, 4, 4)], [])


def test_unet_feature_loss_sums_levels_and_trains_only_the_hazy_branch() -> None:
    hazy = [torch.ones(1, 4, 8, 8, requires_grad=True), torch.zeros(1, 8, 4, 4, requires_grad=True)]
    clear = [torch.zeros(1, 4, 8, 8, requires_grad=True), torch.full((1, 8, 4, 4), 0.5, requires_grad=True)]
    loss = unet_feature_loss(hazy, clear)
    assert loss.item() == pytest.approx(1.0 + 0.5)
    loss.backward()
    assert all(f.grad is not None and bool((f.grad != 0).all()) for f in hazy)
    assert all(f.grad is None for f in clear)


def test_contrastive_loss_matches_hand_computation_and_detaches_targets() -> None:
    out, gt, hazy = _images(seed=3)
    out.requires_grad_(True)
    gt.requires_grad_(True)
    loss = ContrastivePerceptualLoss(_two_level, weights=(1.0, 0.5), eps=0.0)(out, gt, hazy)
    expected = sum(
        w * (fa - fp).abs().mean() / (fa - fn).abs().mean()
        for w, fa, fp, fn in zip((1.0, 0.5), _two_level(out), _two_level(gt), _two_level(hazy), strict=True)
    )
    assert torch.allclose(loss, expected)
    loss.backward()
    assert out.grad is not None and gt.grad is None


def test_contrastive_loss_is_zero_at_the_clear_image() -> None:
    _, gt, hazy = _images(seed=4)
    assert float(ContrastivePerceptualLoss(_two_level, weights=(1.0, 1.0))(gt, gt, hazy)) == 0.0


def test_contrastive_loss_checks_the_number_of_feature_maps() -> None:
    out, gt, hazy = _images()
    with pytest.raises(ValueError):
        ContrastivePerceptualLoss(_two_level)(out, gt, hazy)  # 5 default weights, 2 maps


def test_contrastive_loss_runs_on_vgg19_features() -> None:
    torch.manual_seed(0)
    out, gt, hazy = _images(shape=(1, 3, 32, 32))
    out.requires_grad_(True)
    loss = ContrastivePerceptualLoss(VGG19Features())(out, gt, hazy)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert out.grad is not None and bool(torch.isfinite(out.grad).all()) and float(out.grad.abs().sum()) > 0


def test_the_scale_invariant_depth_term_ignores_the_prediction_scale() -> None:
    from training.losses import depth_loss, scale_invariant_l1

    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 8, 8, generator=gen) + 0.1
    pred = torch.rand(2, 1, 8, 8, generator=gen) + 0.1
    assert scale_invariant_l1(target * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1), target) < 1e-6
    assert torch.allclose(scale_invariant_l1(pred, target), scale_invariant_l1(pred * 7.0, target), atol=1e-6)
    coeff = torch.ones_like(target)
    plain = depth_loss(pred, target, coeff)
    assert torch.equal(plain, depth_loss(pred, target, coeff, absolute=1.0, scale_invariant=0.0))  # the paper's
    mixed = depth_loss(pred, target, coeff, absolute=0.2, scale_invariant=1.0)
    assert torch.allclose(mixed, 0.2 * plain + scale_invariant_l1(pred, target))
    weight = torch.zeros_like(target)
    weight[0] = 1.0  # the second sample has no trusted pixel: it adds nothing
    assert torch.allclose(scale_invariant_l1(pred, target, weight) * 2, scale_invariant_l1(pred[:1], target[:1]))
