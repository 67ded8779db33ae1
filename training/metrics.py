"""Image and depth metrics shared by training (validation) and evaluation.

Protocol (the same for every method): full image, float RGB in [0, 1], H×W×3 numpy arrays, no border crop and no
uint8 quantisation of the output before scoring. PSNR and SSIM come from ``skimage.metrics`` with
``data_range=1`` and ``channel_axis=-1`` (SSIM: skimage's default 7×7 uniform window, shrunk to the largest odd
size that fits images smaller than 7 px). This differs from the released DCMPNet SSIM (Gaussian window on a 2×
average-pooled image, DCMPNET.md §4), so its Table 1 numbers are not directly comparable.

Depth metrics follow the monocular-depth convention: the prediction is scaled by the ratio of medians against
the true depth (relative depth has no absolute scale), pixels whose true depth is 0 are ignored, then
``AbsRel = mean(|p − g| / g)`` and ``δ1 = fraction with max(p/g, g/p) < 1.25``.

FADE is the service's own bounded computation (``service.density.fade_of_array``, one function for both), so an
evaluation scores an image exactly as ``/density`` does and no image size or aspect ratio makes it unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from service.codec import to_uint8
from service.density import MAX_FADE_PIXELS, fade_of_array

__all__ = [
    "CRUSHED_LUMINANCE",
    "PSNR_CAP_DB",
    "ToneShift",
    "depth_errors",
    "fade",
    "mean_finite_psnr",
    "psnr",
    "ssim",
    "to_hwc",
    "tone_shift",
]

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; averages cap each value here (JSON has no inf)
_DELTA = 1.25
CRUSHED_LUMINANCE = 0.02
"""A pixel whose Rec. 709 luminance is below this is crushed to near-black (the tone targets' definition)."""
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def to_hwc(x: object) -> np.ndarray:
    """Converts a 3×H×W / 1×3×H×W torch tensor or an H×W×C array to a float64 H×W×C numpy array."""
    if hasattr(x, "detach"):
        chw: np.ndarray = x.detach().float().cpu().numpy()
        if chw.ndim == 4:
            if chw.shape[0] != 1:
                raise ValueError(f"expected one image, got batch of {chw.shape[0]}")
            chw = chw[0]
        x = chw.transpose(1, 2, 0)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected an image, got shape {arr.shape}")
    return arr


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and reference {gt.shape} differ in shape")


def psnr(pred: object, gt: object) -> float:
    """PSNR in dB of two [0, 1] images (``data_range=1``); ``math.inf`` for identical images.

    Args:
        pred: Output image (H×W×C array or C×H×W tensor).
        gt: Reference image, same shape.

    Returns:
        PSNR in dB.
    """
    p, g = to_hwc(pred), to_hwc(gt)
    _check_pair(p, g)
    if np.array_equal(p, g):
        return math.inf
    return float(peak_signal_noise_ratio(g, p, data_range=1.0))


def mean_finite_psnr(values: Iterable[float]) -> float:
    """Mean PSNR with each value capped at ``PSNR_CAP_DB`` (so one identical pair cannot make the mean inf)."""
    vals = [min(float(v), PSNR_CAP_DB) for v in values]
    if not vals:
        raise ValueError("no PSNR values")
    return float(np.mean(vals))


def ssim(pred: object, gt: object) -> float:
    """SSIM of two [0, 1] RGB images (skimage, ``data_range=1``, ``channel_axis=-1``).

    Args:
        pred: Output image.
        gt: Reference image, same shape.

    Returns:
        Mean SSIM.
    """
    p, g = to_hwc(pred), to_hwc(gt)
    _check_pair(p, g)
    side = min(p.shape[:2])
    win = min(7, side if side % 2 == 1 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3×3 pixels, got {p.shape[:2]}")
    return float(structural_similarity(g, p, data_range=1.0, channel_axis=-1, win_size=win))


def fade(image: object, max_pixels: int = MAX_FADE_PIXELS) -> float:
    """FADE fog density (Choi et al., TIP 2015); lower is less haze. The service's computation, bounded as it is.

    The [0, 1] float image is rounded to uint8 first by the service's rule (``service.codec.to_uint8``; FADE is
    defined on 8-bit images), then scored by
    ``service.density.fade_of_array``, the function behind the service's ``/density`` and ``fade_in``/``fade_out``:
    an image whose size, with sides under 16 px padded, exceeds ``max_pixels`` is shrunk first (box filter,
    aspect kept while both sides stay at least 16 px), so one score costs about a second and a bounded amount of
    memory at any size and aspect ratio (a 3×2,000,000 image would otherwise be padded to 32 megapixels). With the
    default bound an array gets the same score here as from the service with its default
    ``DEHAZE_DENSITY_MAX_PIXELS``; images within the bound are scored at full resolution.

    Args:
        image: RGB image in [0, 1] (H×W×3 array or 3×H×W tensor).
        max_pixels: The bound on the scored (padded) size.

    Returns:
        The FADE score.
    """
    arr = to_hwc(image)
    if arr.shape[2] != 3:
        raise ValueError(f"FADE needs an RGB image, got {arr.shape[2]} channels")
    return fade_of_array(to_uint8(arr), max_pixels)


def depth_errors(pred: object, gt: object) -> tuple[float, float]:
    """AbsRel and δ<1.25 after median scaling, ignoring pixels whose true depth is 0.

    Args:
        pred: Predicted depth (any positive scale), H×W(×1) array or 1×H×W tensor.
        gt: True depth, same shape; 0 marks invalid pixels.

    Returns:
        ``(absrel, delta1)``.

    Raises:
        ValueError: Shapes differ, no valid pixel, or the prediction's median over the valid pixels is not
            positive (no scale can be fitted).
    """
    p, g = to_hwc(pred), to_hwc(gt)
    _check_pair(p, g)
    valid = g > 0
    if not valid.any():
        raise ValueError("no pixel with positive true depth")
    pv, gv = p[valid], g[valid]
    med = float(np.median(pv))
    if not med > 0:
        raise ValueError(f"predicted depth has non-positive median {med} over valid pixels")
    pv = np.clip(pv * (float(np.median(gv)) / med), 1e-6, None)
    absrel = float(np.mean(np.abs(pv - gv) / gv))
    delta1 = float(np.mean(np.maximum(pv / gv, gv / pv) < _DELTA))
    return absrel, delta1


class ToneShift(NamedTuple):
    """How a dehazer changed an image's tones (output minus input); see :func:`tone_shift`."""

    crushed: float
    rg_shift: float
    bg_shift: float
    luminance_shift: float
    dark_decile_shift: float


def tone_shift(hazy: object, dehazed: object) -> ToneShift:
    """Tone statistics of a dehazed image against its input, for judging results without ground truth.

    A lower haze score can be bought by crushing shadows or tinting the picture; these numbers expose that.

    Args:
        hazy: The input RGB image in [0, 1].
        dehazed: The output, same size.

    Returns:
        ``crushed``: fraction of output pixels with luminance < :data:`CRUSHED_LUMINANCE`; ``rg_shift`` and
        ``bg_shift``: change of the mean of R−G and of B−G; ``luminance_shift``: change of the mean luminance;
        ``dark_decile_shift``: change of the mean luminance of the darkest 10 % of pixels (ranked separately in
        each image).
    """
    a, b = to_hwc(hazy), to_hwc(dehazed)
    _check_pair(a, b)
    la, lb = a @ _LUMA, b @ _LUMA
    k = max(1, la.size // 10)

    def dark(lum: np.ndarray) -> float:
        return float(np.partition(lum.ravel(), k - 1)[:k].mean())

    def mean_diff(img: np.ndarray, c: int) -> float:
        return float((img[..., c] - img[..., 1]).mean())

    return ToneShift(
        crushed=float((lb < CRUSHED_LUMINANCE).mean()),
        rg_shift=mean_diff(b, 0) - mean_diff(a, 0),
        bg_shift=mean_diff(b, 2) - mean_diff(a, 2),
        luminance_shift=float(lb.mean() - la.mean()),
        dark_decile_shift=dark(lb) - dark(la),
    )
