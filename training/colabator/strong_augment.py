"""The student's strong augmentation: the same real crop as the teacher's, made harder to dehaze.

Colabator trains the student on a strongly augmented view and the teacher labels the clean one, so the student
must produce the teacher's result from a worse input (the released code draws two of RandAugment's contrast,
brightness, posterize, sharpness and blur ops; CORUN.md §3). Ours is photometric jitter and degradations, drawn in
this order from an explicit generator (pure: one seed, one result):

1. brightness gain, contrast about the mean, saturation about the grey level, gamma (each always, random amount);
2. Gaussian blur with probability ``blur_p``;
3. Gaussian noise with probability ``noise_p``;
4. a JPEG round trip with probability ``jpeg_p``.

None of these moves a pixel, so the label, trust map and depth need no change. The geometric part (crop and flip)
happens before, identically on every array, in :func:`training.augment.random_crop` and ``random_flip``.
"""

from __future__ import annotations

import io

import numpy as np
import scipy.ndimage
from PIL import Image

from service.codec import to_uint8
from training.colabator.config import StrongAugConfig

__all__ = ["jpeg_round_trip", "photometric_jitter", "strong_augment"]


def photometric_jitter(rgb: np.ndarray, rng: np.random.Generator, cfg: StrongAugConfig) -> np.ndarray:
    """Brightness, contrast, saturation and gamma, each by a random amount (clipped to [0, 1])."""
    gain = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    saturation = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    gamma = rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
    out = rgb * gain
    out = (out - out.mean()) * contrast + out.mean()
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * saturation
    return np.clip(out, 0.0, 1.0) ** gamma


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The image encoded as JPEG at ``quality`` and decoded again, float32 in [0, 1]."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(rgb)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def strong_augment(rgb: np.ndarray, rng: np.random.Generator, cfg: StrongAugConfig) -> np.ndarray:
    """The strongly augmented view of an H×W×3 float image in [0, 1] (see the module docstring).

    Args:
        rgb: The crop the teacher's label was cut alongside.
        rng: Source of randomness; the draws happen in a fixed order.
        cfg: Strengths and probabilities.

    Returns:
        float32 H×W×3 in [0, 1].
    """
    out = photometric_jitter(rgb.astype(np.float32), rng, cfg)
    if rng.random() < cfg.blur_p:
        sigma = rng.uniform(*cfg.blur_sigma)
        out = scipy.ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0), mode="reflect")
    if rng.random() < cfg.noise_p:
        out = out + rng.normal(0.0, rng.uniform(*cfg.noise_sigma), size=out.shape)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if rng.random() < cfg.jpeg_p:
        out = jpeg_round_trip(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out
