"""Atmospheric scattering model and the dark channel prior (DCP) dehazer.

Haze model (Koschmieder; the paper's Eq. 1-2): ``I = J * t + A * (1 - t)`` with ``t = exp(-beta * d)``, where
``J`` is the clear image, ``d`` the scene depth, ``beta`` the scattering coefficient and ``A`` the airlight.

The DCP dehazer follows He, Sun and Tang, "Single Image Haze Removal Using Dark Channel Prior" (CVPR 2009,
TPAMI 2011), with the soft-matting step replaced by the guided filter of He, Sun and Tang (ECCV 2010), as the
TPAMI version recommends. It is the project's classical baseline and its baseline depth estimator
(``dcp_depth``); it needs no weights.

All functions take torch tensors, images N×3×H×W and depth N×1×H×W, float in [0, 1], and work per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "box_filter",
    "dark_channel",
    "dcp_dehaze",
    "dcp_depth",
    "estimate_airlight",
    "estimate_transmission",
    "guided_filter",
    "recover_radiance",
    "synthesize_haze",
    "transmission",
]

Scalar = float | torch.Tensor

_AIRLIGHT_FRACTION = 1e-3  # He et al.: the brightest 0.1 % of the dark channel
_GUIDED_RADIUS_PER_PIXEL = 60 / 600  # He et al. use r = 60 for ~600 px images
_GUIDED_EPS = 1e-3
_LOG_EPS = 1e-6
_FLAT_SPAN = 1e-4  # a -log t range below this is rounding noise: the image has no depth cue


def _check_images(img: torch.Tensor, name: str = "img") -> None:
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"{name} must be N×3×H×W, got shape {tuple(img.shape)}")


def _check_depth(depth: torch.Tensor, name: str = "depth") -> None:
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"{name} must be N×1×H×W, got shape {tuple(depth.shape)}")


def _check_patch(patch: int) -> None:
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be a positive odd integer, got {patch}")


def _per_sample(value: Scalar, ref: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """Turns a float or tensor into an N×C×1×1 (or 1×1×1×1) tensor that broadcasts against ``ref``.

    Accepted: a Python number or one-element tensor (shared by all samples), a tensor of shape (N,) (one value
    per sample), (N, C) with C in {1, ``channels``}, or an already broadcastable 4-D tensor.
    """
    n = ref.shape[0]
    v = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if v.numel() == 1:
        return v.reshape(1, 1, 1, 1)
    if v.dim() == 1 and v.shape[0] == n:
        return v.reshape(n, 1, 1, 1)
    if v.dim() == 2 and v.shape[0] == n and v.shape[1] in (1, channels):
        return v.reshape(n, v.shape[1], 1, 1)
    if v.dim() == 4 and v.shape[0] in (1, n) and v.shape[1] in (1, channels) and v.shape[2:] == (1, 1):
        return v
    raise ValueError(
        f"{name} must be a number or have shape (N,), (N,{channels}) or (N,{channels},1,1) "
        f"for N={n}, got shape {tuple(v.shape)}"
    )


def transmission(depth: torch.Tensor, beta: Scalar) -> torch.Tensor:
    """Transmission ``t = exp(-beta * d)`` (the paper's Eq. 2).

    Args:
        depth: Scene depth N×1×H×W (any non-negative scale; the project uses relative depth in [0, 1]).
        beta: Scattering coefficient, a number or one value per sample (shape (N,)).

    Returns:
        Transmission N×1×H×W in (0, 1].
    """
    _check_depth(depth)
    return torch.exp(-_per_sample(beta, depth, 1, "beta") * depth)


def synthesize_haze(clear: torch.Tensor, depth: torch.Tensor, beta: Scalar, airlight: Scalar) -> torch.Tensor:
    """Renders haze onto a clear image: ``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``.

    Args:
        clear: Clear image J, N×3×H×W in [0, 1].
        depth: Depth N×1×H×W, 0 = near.
        beta: Scattering coefficient, a number or per sample (N,).
        airlight: Airlight A, a number, per sample (N,) or per sample and channel (N, 3).

    Returns:
        The hazy image N×3×H×W; it stays in [0, 1] when J and A do.
    """
    _check_images(clear, "clear")
    _check_depth(depth)
    if clear.shape[0] != depth.shape[0] or clear.shape[2:] != depth.shape[2:]:
        raise ValueError(f"clear {tuple(clear.shape)} and depth {tuple(depth.shape)} do not match")
    t = transmission(depth, beta)
    a = _per_sample(airlight, clear, 3, "airlight")
    return clear * t + a * (1 - t)


def recover_radiance(
    hazy: torch.Tensor, trans: torch.Tensor, airlight: Scalar, t0: float = 0.1, clamp: bool = True
) -> torch.Tensor:
    """Inverts the haze model: ``J = (I - A) / max(t, t0) + A``.

    Args:
        hazy: Hazy image N×3×H×W.
        trans: Transmission N×1×H×W.
        airlight: Airlight, any form ``synthesize_haze`` accepts.
        t0: Lower bound on t; He et al. use 0.1 so that noise in dense haze is not amplified without limit.
        clamp: Clamp the result to [0, 1].

    Returns:
        The recovered clear image N×3×H×W.
    """
    _check_images(hazy, "hazy")
    _check_depth(trans, "trans")
    a = _per_sample(airlight, hazy, 3, "airlight")
    out = (hazy - a) / trans.clamp(min=t0) + a
    return out.clamp(0.0, 1.0) if clamp else out


def _min_filter(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Square min filter of odd size ``patch`` with edge replication (so borders are not darkened)."""
    r = patch // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    return -F.max_pool2d(-padded, kernel_size=patch, stride=1)


def dark_channel(img: torch.Tensor, patch: int = 15) -> torch.Tensor:
    """Dark channel: the minimum over the colour channels, then over a ``patch``×``patch`` window.

    Args:
        img: Image N×3×H×W.
        patch: Odd window size (He et al.: 15 for ~600 px images).

    Returns:
        Dark channel N×1×H×W.
    """
    _check_images(img)
    _check_patch(patch)
    return _min_filter(img.amin(dim=1, keepdim=True), patch)


def estimate_airlight(img: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
    """Airlight by He's rule.

    Takes the brightest 0.1 % of the dark channel (at least one pixel); among those pixels, the one with the
    highest intensity (sum of RGB) in the input gives A. Using the dark channel rather than the brightest input
    pixel avoids picking a white object instead of the haze.

    Args:
        img: Hazy image N×3×H×W.
        dark: Its dark channel N×1×H×W.

    Returns:
        Airlight N×3×1×1.
    """
    _check_images(img)
    _check_depth(dark, "dark")
    n, _, h, w = img.shape
    k = max(1, int(h * w * _AIRLIGHT_FRACTION))
    candidates = dark.reshape(n, -1).topk(k, dim=1).indices  # N×k
    pixels = img.reshape(n, 3, -1)
    cand_rgb = pixels.gather(2, candidates.unsqueeze(1).expand(n, 3, k))  # N×3×k
    best = cand_rgb.sum(dim=1).argmax(dim=1)  # N
    airlight = cand_rgb.gather(2, best.view(n, 1, 1).expand(n, 3, 1))
    return airlight.reshape(n, 3, 1, 1)


def estimate_transmission(
    img: torch.Tensor, airlight: torch.Tensor, patch: int = 15, omega: float = 0.95
) -> torch.Tensor:
    """Coarse DCP transmission ``t = 1 - omega * dark(I / A)``.

    Args:
        img: Hazy image N×3×H×W.
        airlight: N×3×1×1 (as from ``estimate_airlight``).
        patch: Dark channel window.
        omega: Fraction of haze removed; below 1 it keeps a little haze for depth perception (He et al.: 0.95).

    Returns:
        Coarse (blocky) transmission N×1×H×W.
    """
    normalised = img / _per_sample(airlight, img, 3, "airlight").clamp(min=_LOG_EPS)
    return 1.0 - omega * _min_filter(normalised.amin(dim=1, keepdim=True), patch)


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)² window, computed with cumulative sums in O(1) per pixel.

    At the borders the window is cut to the image and the mean is over the pixels inside it.

    Args:
        x: N×C×H×W.
        radius: Window radius r >= 0.

    Returns:
        Box-filtered tensor, same shape.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    ones = torch.ones(1, 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
    return _box_sum(x, radius) / _box_sum(ones, radius)


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    # Running sums over a whole image lose float32 precision (they reach H·W); accumulate in float64.
    wide = x.to(torch.float64)
    return _window_sum(_window_sum(wide, radius, dim=2), radius, dim=3).to(x.dtype)


def _window_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sum over ``[i - r, i + r]`` along ``dim``, clipped to the tensor."""
    size = x.shape[dim]
    zero_shape = list(x.shape)
    zero_shape[dim] = 1
    csum = torch.cat([x.new_zeros(zero_shape), x.cumsum(dim=dim)], dim=dim)  # csum[k] = sum x[:k]
    idx = torch.arange(size, device=x.device)
    hi = (idx + radius + 1).clamp(max=size)
    lo = (idx - radius).clamp(min=0)
    return csum.index_select(dim, hi) - csum.index_select(dim, lo)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float = _GUIDED_EPS) -> torch.Tensor:
    """Grey-guide guided filter (He et al., ECCV 2010): edge-preserving smoothing of ``src`` along ``guide``.

    Fits ``q = a * I + b`` in every window by ridge regression (``eps`` is the ridge weight: larger means
    smoother), then averages the coefficients of all windows covering a pixel.

    Args:
        guide: Guide I, N×1×H×W.
        src: Image p to filter, N×C×H×W.
        radius: Window radius.
        eps: Regularisation.

    Returns:
        Filtered ``src``, N×C×H×W.
    """
    mean_i = box_filter(guide, radius)
    mean_p = box_filter(src, radius)
    cov_ip = box_filter(guide * src, radius) - mean_i * mean_p
    var_i = box_filter(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


def _guided_radius(height: int, width: int) -> int:
    return max(1, round(max(height, width) * _GUIDED_RADIUS_PER_PIXEL))


def _grey(img: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * weights).sum(dim=1, keepdim=True)


def dcp_dehaze(
    img: torch.Tensor, patch: int = 15, omega: float = 0.95, t0: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dehazes with the dark channel prior and a guided-filter-refined transmission.

    The guided-filter radius scales with the image (r = 60 at 600 px, as in He et al.), eps = 1e-3, the guide is
    the grey hazy image.

    Args:
        img: Hazy image N×3×H×W in [0, 1].
        patch: Dark channel window (odd).
        omega: Haze-removal fraction.
        t0: Lower bound on the transmission used in the recovery.

    Returns:
        ``(dehazed, trans)``: the dehazed image N×3×H×W clamped to [0, 1] and the refined transmission
        N×1×H×W clamped to [0, 1] (before the t0 bound).
    """
    _check_images(img)
    _check_patch(patch)
    if not 0.0 < omega <= 1.0:
        raise ValueError(f"omega must be in (0, 1], got {omega}")
    if not 0.0 < t0 < 1.0:
        raise ValueError(f"t0 must be in (0, 1), got {t0}")
    airlight = estimate_airlight(img, dark_channel(img, patch))
    coarse = estimate_transmission(img, airlight, patch, omega)
    radius = _guided_radius(img.shape[2], img.shape[3])
    trans = guided_filter(_grey(img), coarse, radius).clamp(0.0, 1.0)
    return recover_radiance(img, trans, airlight, t0), trans


def dcp_depth(img: torch.Tensor) -> torch.Tensor:
    """Baseline depth estimate from the DCP transmission: ``d = -log t``, min-max normalised per image.

    Only the ordering and relative spacing are meaningful (beta is unknown), hence the per-image normalisation;
    a flat result (range below 1e-4, e.g. a uniform image) maps to zeros.

    Args:
        img: Hazy image N×3×H×W in [0, 1].

    Returns:
        Depth N×1×H×W in [0, 1], 0 = near, 1 = far.
    """
    _, trans = dcp_dehaze(img)
    depth = -torch.log(trans.clamp(min=_LOG_EPS))
    flat = depth.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1)
    span = flat.amax(dim=1).view(-1, 1, 1, 1) - lo
    scaled = (depth - lo) / span.clamp(min=_FLAT_SPAN)
    return torch.where(span > _FLAT_SPAN, scaled, torch.zeros_like(scaled)).clamp(0.0, 1.0)
