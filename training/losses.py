"""DCMPNet training losses (Zhang et al., CVPR 2024): Eq. 5, Eq. 9 and Eq. 11.

All norms are mean absolute errors (the paper writes ||·||_1; the released code uses ``nn.L1Loss``, a mean), so
the terms do not grow with the image size. Coefficient maps come from ``training.perceptron.DifferencePerceptron``
and average 1 per sample; a 1-channel map is broadcast over the 3 image channels.

Departures from the released code (DCMPNET.md §3, §7):
- ``unet_feature_loss`` is meant to be fed Φ's *own* U-Net features of the hazy and the clear image, so it trains
  Φ; the released term compared a separate, never-trained U-Net and had zero gradient (GitHub issue #3).
- ``ContrastivePerceptualLoss`` normalises its input with the ImageNet statistics (inside ``VGG19Features``) and
  has no random MLP heads at relu5_1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["ContrastivePerceptualLoss", "dehaze_loss", "depth_loss", "unet_feature_loss"]

Extractor = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def _check_coeff(coeff: torch.Tensor, ref: torch.Tensor) -> None:
    if coeff.dim() != 4 or coeff.shape[1] not in (1, ref.shape[1]) or coeff.shape[0] != ref.shape[0]:
        raise ValueError(f"coeff {tuple(coeff.shape)} must be N×1×H×W or N×C×H×W for {tuple(ref.shape)}")
    if coeff.shape[2:] != ref.shape[2:]:
        raise ValueError(f"coeff {tuple(coeff.shape)} and prediction {tuple(ref.shape)} differ in size")


def _check_same(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def scale_invariant_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(|s·pred − target|)`` with ``s`` per sample the ratio of the target's to the prediction's median over
    the trusted pixels (``weight > 0``), not differentiated.

    Relative depth normalised per scene (SOTS: 0 nearest, 1 farthest in that scene) has a scale that a crop cannot
    show; this term asks Ψ for the depth's shape only, which is what median-scaled AbsRel and δ<1.25 score.
    """
    w = torch.ones_like(target) if weight is None else weight
    scales = []
    for p, t, m in zip(pred.flatten(1), target.flatten(1), w.flatten(1) > 0, strict=True):
        if not bool(m.any()):
            scales.append(pred.new_ones(()))
            continue
        scales.append(t[m].median() / p[m].median().clamp_min(1e-3))
    s = torch.stack(scales).detach().view(-1, *([1] * (pred.dim() - 1)))
    return ((s * pred - target).abs() * w).mean()


def depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    coeff: torch.Tensor,
    weight: torch.Tensor | None = None,
    absolute: float = 1.0,
    scale_invariant: float = 0.0,
) -> torch.Tensor:
    """Eq. 9, ``mean(A ⊙ |pred - target|) + mean(|pred - target|)``, times ``absolute``, plus ``scale_invariant``
    times :func:`scale_invariant_l1`.

    The plain term keeps every pixel supervised; the weighted one adds emphasis where the coefficient map
    (from the dehazing error) is large.

    Args:
        pred: Depth of the dehazed image, Ψ(Φ(ũ*)), N×1×H×W.
        target: Depth target M_u, N×1×H×W.
        coeff: Coefficient map A_{d,r}, N×1×H×W.
        weight: Per-pixel trust in the target, N×1×H×W (1 for true depth, a confidence for a pseudo-depth, 0 where
            there is none); ``None`` trusts every pixel.

    Returns:
        Scalar loss.
    """
    _check_same(pred, target, "pred and target")
    _check_coeff(coeff, pred)
    err = (pred - target).abs()
    if weight is not None:
        _check_same(weight, target, "weight and target")
        err = err * weight
    loss = absolute * ((coeff * err).mean() + err.mean())
    if scale_invariant:
        loss = loss + scale_invariant * scale_invariant_l1(pred, target, weight)
    return loss


def dehaze_loss(
    out: torch.Tensor,
    gt: torch.Tensor,
    hazy: torch.Tensor,
    coeff: torch.Tensor,
    perceptual: ContrastivePerceptualLoss | None = None,
    l1_weight: float = 0.0,
) -> torch.Tensor:
    """Eq. 11: ``mean(A ⊙ |out - gt|)``, plus ``l1_weight · mean(|out - gt|)``, plus the perceptual term if given.

    The plain L1 term is the released code's main dehazing loss. Without it, an adversarial coefficient map that
    has concentrated on a few pixels leaves the rest of the image, and so its global tone, almost unsupervised.

    Args:
        out: Dehazed image u* = Φ(ũ*), N×3×H×W.
        gt: Clear image u, N×3×H×W.
        hazy: Hazy input ũ*, N×3×H×W (the negative of the perceptual term).
        coeff: Coefficient map A_{e,r} from the depth difference, N×1×H×W (broadcast over channels).
        perceptual: The VGG ratio term; ``None`` turns it off (no ImageNet weights available).
        l1_weight: Weight of the unweighted L1 term (0: the paper's equation alone).

    Returns:
        Scalar loss.
    """
    _check_same(out, gt, "out and gt")
    _check_same(out, hazy, "out and hazy")
    _check_coeff(coeff, out)
    err = (out - gt).abs()
    loss = (coeff * err).mean()
    if l1_weight:
        loss = loss + l1_weight * err.mean()
    if perceptual is not None:
        loss = loss + perceptual(out, gt, hazy)
    return loss


def unet_feature_loss(feats_hazy: Sequence[torch.Tensor], feats_clear: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 5: the sum over U-Net feature levels of ``mean(|F(hazy) - F(clear)|)``.

    The clear-image features are the target and are detached, so the loss pulls the hazy-image features towards
    them and does not drag the clear-image features towards haze.

    Args:
        feats_hazy: Φ's U-Net features of the hazy image, one tensor per level.
        feats_clear: The same for the clear image.

    Returns:
        Scalar loss.
    """
    if len(feats_hazy) != len(feats_clear) or not feats_hazy:
        raise ValueError(f"need the same non-zero number of levels, got {len(feats_hazy)} and {len(feats_clear)}")
    total = feats_hazy[0].new_zeros(())
    for level, (fh, fc) in enumerate(zip(feats_hazy, feats_clear, strict=True)):
        _check_same(fh, fc, f"level {level} features")
        total = total + (fh - fc.detach()).abs().mean()
    return total


class ContrastivePerceptualLoss(nn.Module):
    """Contrastive regularisation of AECR-Net (Wu et al., CVPR 2021), the ratio term of Eq. 11.

    ``sum_i w_i * L1(f_i(out), f_i(gt)) / (L1(f_i(out), f_i(hazy)) + eps)``: pull the output towards the clear
    image (positive) and push it away from the hazy input (negative) in feature space. Positive and negative
    features are computed without gradient.

    Args:
        extractor: Maps an N×3×H×W [0, 1] image to a list of feature maps, one per weight (e.g. ``VGG19Features``).
        weights: Per-level weights; AECR-Net's (1/32, 1/16, 1/8, 1/4, 1) for relu1_1..relu5_1.
        eps: Keeps the ratio finite when the output equals the hazy input.
    """

    def __init__(
        self,
        extractor: nn.Module | Extractor,
        weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if not weights:
            raise ValueError("weights must not be empty")
        self.extractor = extractor
        self.weights = tuple(float(w) for w in weights)
        self.eps = eps

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.extractor(x))
        if len(feats) != len(self.weights):
            raise ValueError(f"extractor gave {len(feats)} feature maps for {len(self.weights)} weights")
        return feats

    def forward(self, out: torch.Tensor, gt: torch.Tensor, hazy: torch.Tensor) -> torch.Tensor:
        """Computes the loss.

        Args:
            out: Anchor, the dehazed image N×3×H×W.
            gt: Positive, the clear image.
            hazy: Negative, the hazy input.

        Returns:
            Scalar loss.
        """
        _check_same(out, gt, "out and gt")
        _check_same(out, hazy, "out and hazy")
        anchor = self._features(out)
        with torch.no_grad():  # detach too: an extractor may hand back its input or other graph-carrying tensors
            positive = [f.detach() for f in self._features(gt)]
            negative = [f.detach() for f in self._features(hazy)]
        total = out.new_zeros(())
        for w, a, p, n in zip(self.weights, anchor, positive, negative, strict=True):
            total = total + w * (a - p).abs().mean() / ((a - n).abs().mean() + self.eps)
        return total
