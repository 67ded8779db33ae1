"""Tests for the difference perceptron and gradient reversal (training/perceptron.py)."""

from __future__ import annotations

import pytest
import torch

from training.losses import depth_loss
from training.perceptron import DifferencePerceptron, GradientReversal, reverse_gradient


@pytest.mark.parametrize(("in_ch", "shape"), [(3, (2, 3, 16, 20)), (1, (1, 1, 7, 5))])
def test_coefficients_have_shape_mean_one_and_are_positive(in_ch: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    perceptron = DifferencePerceptron(in_ch, hidden=8)
    coeff = perceptron(torch.randn(*shape))
    assert coeff.shape == (shape[0], 1, shape[2], shape[3])
    assert bool((coeff > 0).all())
    assert torch.allclose(coeff.mean(dim=(1, 2, 3)), torch.ones(shape[0]), atol=1e-5)


def test_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError):
        DifferencePerceptron(3)(torch.randn(1, 1, 8, 8))


def test_gradient_reversal_is_identity_forward_and_negates_backward() -> None:
    x = torch.randn(4, 5, requires_grad=True)
    y = reverse_gradient(x)
    assert torch.equal(y, x)
    (y * 3.0).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -3.0))

    x.grad = None
    GradientReversal(scale=0.5)(x).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))


def test_adversarial_training_moves_weight_onto_the_largest_error() -> None:
    """Minimising the weighted loss through reversal makes the perceptron *raise* it (weight follows the error)."""
    torch.manual_seed(0)
    perceptron = DifferencePerceptron(1, hidden=8)
    optimiser = torch.optim.Adam(perceptron.parameters(), lr=1e-2)
    target = torch.zeros(2, 1, 12, 12)
    pred = torch.zeros(2, 1, 12, 12)
    pred[:, :, 3:6, 3:6] = 1.0  # the only error
    diff = pred - target
    for _ in range(40):
        optimiser.zero_grad()
        coeff = reverse_gradient(perceptron(diff))
        depth_loss(pred, target, coeff).backward()
        optimiser.step()
    coeff = perceptron(diff).detach()
    assert float(coeff[:, :, 3:6, 3:6].mean()) > 5.0 * float(coeff.mean())
