"""Relative depth of a real hazy photo from the physics of haze, for supervising Ψ where no true depth exists.

With the atmospheric scattering model ``I = J·t + A·(1 − t)``, a hazy photo ``I`` and a good dehazed version ``J``
(a teacher's output) give the transmission ``t = (I − A)/(J − A)`` at each pixel, and so a relative depth
``d ∝ −ln t``. The airlight ``A`` is estimated by the dark channel prior's rule (per channel). Per channel the
ratio is unstable where ``J ≈ A``; the three channels are combined by least squares, ``t = Σ(I−A)(J−A) / Σ(J−A)²``,
which weighs each channel by how far its clear value is from the airlight.

The depth is valid only where haze is visible and the ratio is well posed; the confidence map says where:
``conf = clip(Σ(J−A)² / τ, 0, 1)`` (a well-posed ratio), times 0 where ``t`` falls outside ``(t_min, t_max)``
(no visible haze, or haze so thick that the teacher's J is a guess). ``−ln t`` is proportional to depth with no offset
(t = 1 at zero distance), so the depth is only scaled, by the 98th percentile of the confident pixels, and
clipped to [0, 1]: 0 = near, the convention of the datasets' depth.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from model.physics import box_filter, dark_channel, estimate_airlight, guided_filter

__all__ = ["PseudoDepth", "pseudo_depth"]

_T_MIN, _T_MAX = 0.05, 0.97
_TAU = 0.03  # Σ(J−A)² at which a pixel's ratio counts as fully well posed (≈ 0.1 per channel)


class PseudoDepth(NamedTuple):
    """A relative depth (0 = near) and where it can be trusted, each N×1×H×W in [0, 1]."""

    depth: torch.Tensor
    confidence: torch.Tensor


def _normalise(d: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(d)
    for i in range(d.shape[0]):
        valid = d[i][conf[i] > 0.5]
        if valid.numel() < 16:
            continue
        hi = torch.quantile(valid, 0.98)
        out[i] = (d[i] / hi.clamp_min(1e-6)).clamp(0.0, 1.0)
    return out


@torch.no_grad()
def pseudo_depth(hazy: torch.Tensor, dehazed: torch.Tensor, smooth_radius: int | None = None) -> PseudoDepth:
    """Relative depth and its confidence from a hazy image and its dehazed version.

    Args:
        hazy: I, N×3×H×W in [0, 1].
        dehazed: J (e.g. a teacher's output), same shape.
        smooth_radius: Radius of the guided filter (guide: the hazy image's grey level) applied to ``−ln t``
            before normalising; ``None`` picks 2 % of the shorter side.

    Returns:
        ``PseudoDepth(depth, confidence)``; pixels of zero confidence carry no information.
    """
    if hazy.shape != dehazed.shape or hazy.dim() != 4 or hazy.shape[1] != 3:
        raise ValueError(f"hazy and dehazed must both be N×3×H×W, got {tuple(hazy.shape)}, {tuple(dehazed.shape)}")
    airlight = estimate_airlight(hazy, dark_channel(hazy))
    num = ((hazy - airlight) * (dehazed - airlight)).sum(dim=1, keepdim=True)
    den = (dehazed - airlight).pow(2).sum(dim=1, keepdim=True)
    t = num / den.clamp_min(1e-6)
    conf = (den / _TAU).clamp(0.0, 1.0) * ((t > _T_MIN) & (t < _T_MAX)).to(hazy.dtype)
    neg_log_t = -torch.log(t.clamp(_T_MIN, 1.0))
    radius = smooth_radius if smooth_radius is not None else max(2, round(0.02 * min(hazy.shape[-2:])))
    grey = hazy.mean(dim=1, keepdim=True)
    # Fill unreliable pixels with the confidence-weighted local mean (a wide normalised box filter) before smoothing.
    weighted = box_filter(neg_log_t * conf, 4 * radius) / box_filter(conf, 4 * radius).clamp_min(1e-3)
    filled = torch.where(conf > 0.5, neg_log_t, weighted)
    smooth = guided_filter(grey, filled, radius)
    return PseudoDepth(_normalise(smooth, conf), conf)
