"""Paired augmentations: the same random crop, flip and 90° rotation for hazy, clear and depth.

Every function is pure: it takes the arrays and an explicit ``np.random.Generator`` and returns new arrays, so a
seeded generator reproduces the exact same sample and a test can check that all members of a pair moved together.
Arrays are H×W×C (channels last, any C) and must share H and W.

The released DCMPNet code crops, flips horizontally with p = 0.5 and rotates by k·90°, k uniform in {0..3}, all
identically on the pair (DCMPNET.md §3.2); its ``edge_decay`` bias towards image borders is not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

__all__ = [
    "augment_pair",
    "center_crop",
    "colour_jitter",
    "random_crop",
    "random_flip",
    "random_rot90",
    "random_scaled_crop",
]


def _check_same_size(arrays: Sequence[np.ndarray]) -> tuple[int, int]:
    if not arrays:
        raise ValueError("need at least one array")
    sizes = {a.shape[:2] for a in arrays}
    if any(a.ndim != 3 for a in arrays) or len(sizes) != 1:
        raise ValueError(f"arrays must be H×W×C with the same H and W, got {[a.shape for a in arrays]}")
    h, w = next(iter(sizes))
    return int(h), int(w)


def _pad_to(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Reflect-pads (bottom/right) arrays smaller than ``size`` so a crop of ``size`` fits."""
    h, w = _check_same_size(arrays)
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return list(arrays)
    mode: Literal["reflect", "edge"] = "reflect" if ph < h and pw < w else "edge"  # reflect needs pad < size
    return [np.pad(a, ((0, ph), (0, pw), (0, 0)), mode=mode) for a in arrays]


def random_crop(arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Crops the same random ``size``×``size`` window out of every array.

    Arrays smaller than ``size`` are first padded at the bottom/right (reflection where possible).

    Args:
        arrays: H×W×C arrays of the same H, W.
        size: Side of the square crop, >= 1.
        rng: Source of randomness.

    Returns:
        The cropped arrays, in the same order.
    """
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    padded = _pad_to(arrays, size)
    h, w = _check_same_size(padded)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return [a[top : top + size, left : left + size].copy() for a in padded]


def center_crop(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Crops the central ``size``×``size`` window (deterministic; used for quick validation).

    Args:
        arrays: H×W×C arrays of the same H, W.
        size: Side of the square crop, >= 1.

    Returns:
        The cropped arrays.
    """
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    padded = _pad_to(arrays, size)
    h, w = _check_same_size(padded)
    top, left = (h - size) // 2, (w - size) // 2
    return [a[top : top + size, left : left + size].copy() for a in padded]


def random_flip(arrays: Sequence[np.ndarray], rng: np.random.Generator, p: float = 0.5) -> list[np.ndarray]:
    """Flips every array left-right together with probability ``p``.

    Args:
        arrays: H×W×C arrays of the same H, W.
        rng: Source of randomness.
        p: Flip probability.

    Returns:
        The (possibly) flipped arrays.
    """
    _check_same_size(arrays)
    if rng.random() < p:
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    return [a.copy() for a in arrays]


def random_rot90(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Rotates every array by the same k·90°, k uniform in {0, 1, 2, 3}.

    Args:
        arrays: H×W×C arrays of the same H, W.
        rng: Source of randomness.

    Returns:
        The rotated arrays (H and W swap for odd k).
    """
    _check_same_size(arrays)
    k = int(rng.integers(0, 4))
    return [np.ascontiguousarray(np.rot90(a, k, axes=(0, 1))) for a in arrays]


def augment_pair(
    arrays: Sequence[np.ndarray], crop: int | None, rng: np.random.Generator, flip: bool = True, rotate: bool = True
) -> list[np.ndarray]:
    """Random crop, then flip, then 90° rotation, identical for every array.

    Args:
        arrays: H×W×C arrays of the same H, W (e.g. hazy, clear, depth).
        crop: Crop side, or ``None`` to keep the full image.
        rng: Source of randomness; the draws happen in a fixed order, so one seed gives one sample.
        flip: Apply the random horizontal flip.
        rotate: Apply the random rotation.

    Returns:
        The augmented arrays.
    """
    out = random_crop(arrays, crop, rng) if crop is not None else [a.copy() for a in arrays]
    if flip:
        out = random_flip(out, rng)
    if rotate:
        out = random_rot90(out, rng)
    return out


_BILINEAR = Image.Resampling.BILINEAR


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an H×W×C float array to size×size (each channel as a float image)."""
    chans = [
        np.asarray(
            Image.fromarray(a[..., c].astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
        )
        for c in range(a.shape[2])
    ]
    return np.stack(chans, axis=-1).astype(np.float32)


def random_scaled_crop(
    arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator, scale_range: tuple[float, float] = (0.6, 1.0)
) -> list[np.ndarray]:
    """Crops the same random square window of side ``size / s`` (s drawn from ``scale_range``) and resizes it to
    ``size``: crops at several scales, so the network sees both detail and wider context at one input size.

    A window larger than the image shrinks to the image's shorter side (then it is a plain crop when that side is
    ``size`` or less, after padding as :func:`random_crop` does).

    Args:
        arrays: H×W×C float arrays of the same H, W.
        size: Output side.
        rng: Source of randomness (one scale draw, then the window position).
        scale_range: Zoom factors; 1 keeps the original resolution, 0.5 halves it.

    Returns:
        The arrays, each size×size.
    """
    h, w = _check_same_size(arrays)
    s = float(rng.uniform(*scale_range))
    window = min(round(size / s), h, w)
    if window <= size:
        return random_crop(arrays, size, rng)
    crops = random_crop(arrays, window, rng)
    return [_resize(a, size) for a in crops]


def colour_jitter(clear: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Mild photometric jitter of a clear image before haze is added: exposure, saturation and white balance.

    Draws (in this order): exposure gain U(1 ± 0.15·strength), saturation U(1 ± 0.2·strength), a per-channel gain
    U(1 ± 0.04·strength). The result is clipped to [0, 1].

    Args:
        clear: H×W×3 RGB in [0, 1].
        rng: Source of randomness.
        strength: Scales every range; 0 returns a copy.

    Returns:
        The jittered image, float32.
    """
    exposure = rng.uniform(1 - 0.15 * strength, 1 + 0.15 * strength)
    saturation = rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength)
    balance = rng.uniform(1 - 0.04 * strength, 1 + 0.04 * strength, size=3)
    grey = clear.mean(axis=2, keepdims=True)
    out = (grey + (clear - grey) * saturation) * exposure * balance
    return np.clip(out, 0.0, 1.0).astype(np.float32)
