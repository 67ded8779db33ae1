"""CORUN's synthetic haze: the degradation its pre-training applies to a clear image with depth.

Facts from the released code (summarised below and in docs/training.md, "Pre-training CORUN"; the authors' online
haze dataset, a copy of RIDCP's with other ranges); this file is our own code. The clear image J stays the target;
the network's input is made from it in this order, each random choice independent:

1. **Gamma** (p = 0.5): J^γ, γ ~ U[1.5, 3] (a darker, lower-contrast scene under the haze).
2. **Gaussian noise** (p = 0.5): level σ = k/255 with k an integer in [2, 25]; then one of three kinds:
   colour noise (independent per channel, p = 0.4), grey noise (one value for all channels, p = 0.4) or
   channel-correlated noise (p = 0.2: covariance (25/255)²·|Uᵀ·D·U| with D = diag(U[0, 1)³) and U an orthonormal
   basis of a random 3×3 matrix; the released code uses the top level 25 here, not the drawn one). Clipped to
   [0, 1].
3. **Haze**: I = J'·t + A·(1 − t) with t = exp(−2β·d), β ~ U[0.2, 2.8], and A = a + δ, a ~ U[0.25, 1.0] grey
   plus a per-channel shift δ ~ U[−0.025, 0.025]³ (applied with p = ``colour_p`` = 1).
4. **JPEG** (p = 0.5): re-encoding at quality q, an integer in [30, 95] (Pillow, 4:2:0 as libjpeg's default).

Depth. The released code min-max normalises a *disparity-like* map d̂ (RA-Depth, larger = nearer) per image and
uses t = exp(−2β·(1 − d̂)). Our clear images come with true relative depth (SOTS ``depth/``, NYU; larger =
farther), so d here is the depth min-max normalised per image (0 at the nearest pixel, 1 at the farthest) and
t = exp(−2β·d): the nearest point is haze-free and the farthest gets t = e^(−2β) ∈ [0.004, 0.67], as in the
released pipeline, but the haze grows with depth rather than with 1 − disparity.

Departures: the result is clipped to [0, 1] also when no JPEG step follows (the released code leaves values up to
A > 1 unclipped then; our networks' input contract is [0, 1]); the image is cropped *before* it is degraded (the
released code degrades the whole image first; the depth is still normalised over the whole image by the caller,
so t is the same, only the JPEG block grid can differ). The A range is the repository's HEAD value; the 2024
release used [0.5, 1.8] (``HazeRecipe(airlight_range=(0.5, 1.8))``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.codec import to_uint8
from training.data import synthesize

__all__ = [
    "Degradation",
    "HazeRecipe",
    "add_gaussian_noise",
    "degrade",
    "jpeg_reencode",
    "minmax_depth",
]

NOISE_KINDS = ("colour", "grey", "correlated")
_NOISE_KIND_P = (0.4, 0.4, 0.2)


def _range(name: str, r: tuple[float, float], low: float = 0.0) -> None:
    if len(r) != 2 or not low <= r[0] <= r[1]:
        raise ValueError(f"{name} must be (low, high) with {low} <= low <= high, got {r}")


def _prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


@dataclass(frozen=True)
class HazeRecipe:
    """The random ranges of the degradation; the defaults are the released pre-training's.

    Attributes:
        beta_range: β of t = exp(−2β·d).
        airlight_range: The grey part a of the airlight.
        colour_p: Probability of the per-channel airlight shift.
        colour_shift: Half-width of that shift, U[−x, x] per channel.
        gamma_p: Probability of the gamma step; gamma_range: its exponent.
        noise_p: Probability of the noise step; noise_levels: integer σ·255 bounds (inclusive).
        jpeg_p: Probability of the JPEG step; jpeg_quality: integer quality bounds (inclusive).
    """

    beta_range: tuple[float, float] = (0.2, 2.8)
    airlight_range: tuple[float, float] = (0.25, 1.0)
    colour_p: float = 1.0
    colour_shift: float = 0.025
    gamma_p: float = 0.5
    gamma_range: tuple[float, float] = (1.5, 3.0)
    noise_p: float = 0.5
    noise_levels: tuple[int, int] = (2, 25)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        _range("beta_range", self.beta_range)
        _range("airlight_range", self.airlight_range)
        _range("gamma_range", self.gamma_range, low=1e-6)
        _range("noise_levels", self.noise_levels)
        _range("jpeg_quality", self.jpeg_quality, low=1)
        if self.jpeg_quality[1] > 100:
            raise ValueError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        if self.colour_shift < 0:
            raise ValueError(f"colour_shift must be >= 0, got {self.colour_shift}")
        for name in ("colour_p", "gamma_p", "noise_p", "jpeg_p"):
            _prob(name, getattr(self, name))


@dataclass
class Degradation:
    """What one call of :func:`degrade` drew (``None``: that step was skipped); for logs and tests."""

    beta: float
    airlight: np.ndarray
    gamma: float | None = None
    noise_level: int | None = None
    noise_kind: str | None = None
    jpeg_quality: int | None = None


def minmax_depth(depth: np.ndarray) -> np.ndarray:
    """A depth map scaled to [0, 1] over its own range (0 = nearest pixel); a constant map gives zeros."""
    lo, hi = float(depth.min()), float(depth.max())
    if hi <= lo:
        return np.zeros_like(depth, dtype=np.float32)
    return ((depth - lo) / (hi - lo)).astype(np.float32)


def _orthonormal(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.random((3, 3)))
    return q


def add_gaussian_noise(img: np.ndarray, level: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Adds noise of ``level``/255 (colour, grey or channel-correlated, see the module docstring); clips to [0, 1].

    Raises:
        ValueError: Unknown kind.
    """
    h, w = img.shape[:2]
    sigma = level / 255.0
    if kind == "colour":
        noise = rng.normal(0.0, sigma, (h, w, 3))
    elif kind == "grey":
        noise = rng.normal(0.0, sigma, (h, w, 1))
    elif kind == "correlated":
        u = _orthonormal(rng)
        cov = np.abs((25 / 255.0) ** 2 * (u.T @ np.diag(rng.random(3)) @ u))
        noise = rng.multivariate_normal(np.zeros(3), cov, size=(h, w), method="eigh")
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choices: {', '.join(NOISE_KINDS)}")
    return np.clip(img + noise, 0.0, 1.0).astype(np.float32)


def jpeg_reencode(img: np.ndarray, quality: int) -> np.ndarray:
    """Encodes an H×W×3 [0, 1] image as JPEG at ``quality`` with Pillow and decodes it back (float32 in [0, 1])."""
    u8 = to_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _maybe(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def degrade(
    clear: np.ndarray, depth01: np.ndarray, rng: np.random.Generator, recipe: HazeRecipe | None = None
) -> tuple[np.ndarray, Degradation]:
    """The network input made from a clear image: gamma, noise, haze, JPEG, each drawn from ``rng``.

    Args:
        clear: J, H×W×3 float in [0, 1] (left unchanged; it is the target).
        depth01: Depth, H×W×1, already min-max normalised over the whole image (:func:`minmax_depth`).
        rng: Source of every random draw, in a fixed order (one generator state gives one result).
        recipe: The ranges; ``None`` is the released pre-training's.

    Returns:
        ``(hazy, drawn)``: the float32 H×W×3 image in [0, 1] and the values drawn.
    """
    r = recipe or HazeRecipe()
    beta = float(rng.uniform(*r.beta_range))
    airlight = np.full(3, rng.uniform(*r.airlight_range), dtype=np.float64)
    if _maybe(rng, r.colour_p):
        airlight = airlight + rng.uniform(-r.colour_shift, r.colour_shift, size=3)
    drawn = Degradation(beta=beta, airlight=airlight)
    img = clear.astype(np.float32, copy=True)
    if _maybe(rng, r.gamma_p):
        drawn.gamma = float(rng.uniform(*r.gamma_range))
        img = np.power(img, drawn.gamma)
    if _maybe(rng, r.noise_p):
        drawn.noise_level = int(rng.integers(r.noise_levels[0], r.noise_levels[1] + 1))
        drawn.noise_kind = NOISE_KINDS[int(rng.choice(len(NOISE_KINDS), p=_NOISE_KIND_P))]
        img = add_gaussian_noise(img, drawn.noise_level, drawn.noise_kind, rng)
    # t = exp(−2β·d): the scattering model with a scattering coefficient of 2β (see the module docstring).
    img = np.clip(synthesize(img, depth01, 2.0 * beta, airlight, depth_scale=1.0), 0.0, 1.0)
    if _maybe(rng, r.jpeg_p):
        drawn.jpeg_quality = int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
        img = jpeg_reencode(img, drawn.jpeg_quality)
    return img.astype(np.float32), drawn
