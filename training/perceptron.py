"""Difference perceptron (DCMPNet, Zhang et al., CVPR 2024, Sec. 3.3, Eq. 8-12) and gradient reversal.

The paper maps a difference image R (dehazed minus ground truth, Eq. 8, or the depth-map difference for Eq. 11)
through "convolutional layers, MLP and Softmax" to a coefficient map A that weights an L1 loss, so that training
concentrates on the regions where dehazing or depth estimation is not yet good.

Departure from the released code (documented in DCMPNET.md §2.3): the authors take a softmax over all C·H·W
values of the signed difference, so the map averages 1/(H·W) and the weighted loss term is ~1e-5 of its
unweighted twin at 256², i.e. it does nothing. Here the softmax runs over the H·W positions of one learned logit
per pixel and is multiplied by H·W, so ``mean(A) == 1`` per sample and the weighted term has the same scale as a
plain L1.

How the training loop uses it (adversarially): the network being trained minimises ``mean(A ⊙ |error|)`` while
the perceptron is trained to *maximise* it, i.e. to put its weight where the error is largest — the paper's
"focus on regions where the dehazing/depth is not ideal". With one optimiser step on both, the sign flip is
``reverse_gradient``::

    coeff = reverse_gradient(perceptron(diff.detach()))
    loss = depth_loss(pred, target, coeff)  # network params descend, perceptron params ascend

Because ``mean(A) == 1`` and A >= 0, the weighted term never exceeds the largest per-pixel error, so the
maximisation is bounded.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DifferencePerceptron", "GradientReversal", "reverse_gradient"]


class DifferencePerceptron(nn.Module):
    """Maps a difference image to a positive per-pixel coefficient map with mean 1.

    Structure: two 3×3 conv + ReLU layers on the concatenation ``[R, |R|]`` (the sign tells over- from
    under-estimation, the magnitude is what matters most), a per-pixel MLP (1×1 convs) giving one logit per pixel,
    a softmax over the H·W positions of each sample, times H·W.

    Args:
        in_ch: Channels of the difference image (3 for images, 1 for depth maps).
        hidden: Width of the conv and MLP layers.
    """

    def __init__(self, in_ch: int, hidden: int = 16) -> None:
        super().__init__()
        if in_ch < 1 or hidden < 1:
            raise ValueError(f"in_ch and hidden must be >= 1, got in_ch={in_ch}, hidden={hidden}")
        self.in_ch = in_ch
        self.convs = nn.Sequential(
            nn.Conv2d(2 * in_ch, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.mlp = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )

    def forward(self, diff: torch.Tensor) -> torch.Tensor:
        """Computes the coefficient map.

        Args:
            diff: Difference image N×C×H×W (C = ``in_ch``).

        Returns:
            Coefficients N×1×H×W, positive, mean 1 over each sample's pixels.
        """
        if diff.dim() != 4 or diff.shape[1] != self.in_ch:
            raise ValueError(f"expected N×{self.in_ch}×H×W, got shape {tuple(diff.shape)}")
        logits = self.mlp(self.convs(torch.cat([diff, diff.abs()], dim=1)))
        n, _, h, w = logits.shape
        weights = torch.softmax(logits.reshape(n, h * w), dim=1) * (h * w)
        return weights.reshape(n, 1, h, w)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``-scale`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]  # torch's FunctionCtx stub declares no fields; ctx holds any
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None  # type: ignore[attr-defined]  # (FunctionCtx stub, see forward)


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Gradient reversal: returns ``x`` unchanged, but back-propagates ``-scale`` times the gradient.

    Placed between the perceptron and the loss, it makes a single minimising optimiser step train the perceptron
    to maximise the weighted loss (adversarial weighting) while the dehazing/depth network minimises it.

    Args:
        x: Any tensor (typically the coefficient map).
        scale: Magnitude of the reversed gradient.

    Returns:
        A tensor equal to ``x``.
    """
    return _ReverseGradient.apply(x, scale)


class GradientReversal(nn.Module):
    """Module form of ``reverse_gradient`` for use inside ``nn.Sequential``.

    Args:
        scale: Magnitude of the reversed gradient.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity forward with a negated (scaled) gradient backward."""
        return reverse_gradient(x, self.scale)
