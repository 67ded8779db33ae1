"""CORUN's synthetic haze (training.corun_haze, training.corun_data): the physics, the ranges and the frequencies
of the released pipeline's random steps, and the dataset around it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.corun_data import CorunHaze, build_corun_mixture
from training.corun_haze import (
    HazeRecipe,
    add_gaussian_noise,
    degrade,
    jpeg_reencode,
    minmax_depth,
)
from training.sources import clear_records

HAZE_ONLY = HazeRecipe(colour_p=0.0, gamma_p=0.0, noise_p=0.0, jpeg_p=0.0)


def _scene(h: int = 8, w: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clear = rng.random((h, w, 3)).astype(np.float32)
    depth = minmax_depth(rng.random((h, w, 1)).astype(np.float32) * 7 + 2)
    return clear, depth


def test_minmax_depth() -> None:
    d = minmax_depth(np.array([[[2.0], [4.0], [6.0]]], dtype=np.float32))
    np.testing.assert_allclose(d[0, :, 0], [0.0, 0.5, 1.0])
    assert not minmax_depth(np.full((2, 2, 1), 3.0)).any()


def test_haze_alone_is_the_scattering_model() -> None:
    clear, depth = _scene()
    hazy, drawn = degrade(clear, depth, np.random.default_rng(3), HAZE_ONLY)
    assert drawn.gamma is None and drawn.noise_level is None and drawn.jpeg_quality is None
    assert 0.2 <= drawn.beta <= 2.8 and np.all(drawn.airlight == drawn.airlight[0]) and 0.25 <= drawn.airlight[0] <= 1
    t = np.exp(-2 * drawn.beta * depth)
    np.testing.assert_allclose(hazy, clear * t + drawn.airlight[0] * (1 - t), atol=1e-6)
    nearest = depth[..., 0] == 0
    np.testing.assert_allclose(hazy[nearest], clear[nearest], atol=1e-6)  # haze-free at the nearest point


def test_draws_follow_the_released_ranges_and_frequencies() -> None:
    clear, depth = _scene(4, 4)
    rng = np.random.default_rng(0)
    n = 600
    draws = [degrade(clear, depth, rng)[1] for _ in range(n)]
    betas = np.array([d.beta for d in draws])
    airlights = np.stack([d.airlight for d in draws])
    assert betas.min() >= 0.2 and betas.max() <= 2.8 and abs(betas.mean() - 1.5) < 0.1
    assert airlights.min() >= 0.225 and airlights.max() <= 1.025
    spread = airlights - airlights.mean(axis=1, keepdims=True)
    assert 0.01 < np.abs(spread).max() <= 0.05  # a per-channel shift of at most ±0.025 around the grey part
    for name, lo, hi in (("gamma", 1.5, 3.0), ("noise_level", 2, 25), ("jpeg_quality", 30, 95)):
        taken = [getattr(d, name) for d in draws if getattr(d, name) is not None]
        assert abs(len(taken) / n - 0.5) < 0.1, name  # p = 0.5 each (4 standard deviations)
        assert lo <= min(taken) and max(taken) <= hi, name
    levels = [d.noise_level for d in draws if d.noise_level is not None]
    assert all(isinstance(v, int) for v in levels) and {2, 25} & set(levels)
    kinds = Counter(d.noise_kind for d in draws if d.noise_kind is not None)
    total = sum(kinds.values())
    assert abs(kinds["colour"] / total - 0.4) < 0.12 and abs(kinds["grey"] / total - 0.4) < 0.12
    assert abs(kinds["correlated"] / total - 0.2) < 0.1


def test_same_generator_state_same_image() -> None:
    clear, depth = _scene(16, 16)
    a, _ = degrade(clear, depth, np.random.default_rng(7))
    b, _ = degrade(clear, depth, np.random.default_rng(7))
    c, _ = degrade(clear, depth, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1


def test_gamma_darkens_before_the_haze() -> None:
    clear, depth = _scene(16, 16)
    recipe = HazeRecipe(colour_p=0.0, gamma_p=1.0, noise_p=0.0, jpeg_p=0.0)
    hazy, drawn = degrade(clear, depth, np.random.default_rng(1), recipe)
    t = np.exp(-2 * drawn.beta * depth)
    assert drawn.gamma is not None
    np.testing.assert_allclose(hazy, clear**drawn.gamma * t + drawn.airlight[0] * (1 - t), atol=1e-5)


@pytest.mark.parametrize("kind", ["colour", "grey", "correlated"])
def test_noise_kinds(kind: str) -> None:
    img = np.full((96, 96, 3), 0.5, dtype=np.float32)
    noisy = add_gaussian_noise(img, 20, kind, np.random.default_rng(0))
    noise = (noisy - img).reshape(-1, 3)
    corr = np.corrcoef(noise.T)
    if kind == "colour":
        np.testing.assert_allclose(noise.std(axis=0), 20 / 255, rtol=0.05)
        assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.05
    elif kind == "grey":
        np.testing.assert_allclose(noise.std(axis=0), 20 / 255, rtol=0.05)
        assert np.allclose(noise[:, 0], noise[:, 1]) and np.allclose(noise[:, 1], noise[:, 2])
    else:  # covariance (25/255)²·|UᵀDU|: no channel above the top level, not the identity structure
        assert noise.std(axis=0).max() < 25 / 255 * 1.05
    with pytest.raises(ValueError, match="unknown noise kind"):
        add_gaussian_noise(img, 5, "pink", np.random.default_rng(0))


def test_noise_is_clipped() -> None:
    img = np.zeros((32, 32, 3), dtype=np.float32)
    noisy = add_gaussian_noise(img, 25, "colour", np.random.default_rng(0))
    assert noisy.min() == 0.0 and noisy.max() <= 1.0 and noisy.mean() > 0


def test_jpeg_round_trip_loses_more_at_low_quality() -> None:
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    errors = [np.abs(jpeg_reencode(img, q) - img).mean() for q in (30, 95)]
    assert errors[0] > errors[1] > 0
    out = jpeg_reencode(img, 50)
    assert out.shape == img.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_recipe_rejects_bad_ranges() -> None:
    for bad in (
        {"beta_range": (2.0, 1.0)},
        {"gamma_p": 1.5},
        {"jpeg_quality": (30, 101)},
        {"colour_shift": -0.1},
        {"noise_levels": (-1, 3)},
    ):
        with pytest.raises(ValueError):
            HazeRecipe(**bad)  # type: ignore[arg-type]


def test_dataset_items(reside: Path) -> None:
    records = clear_records(reside, "reside")
    ds = CorunHaze(records, crop=16, seed=0, length=5, recipe=HazeRecipe())
    item = ds[3]
    assert item["hazy"].shape == item["clear"].shape == (3, 16, 16) and item["name"].startswith("2_corun_b")
    assert float(item["hazy"].min()) >= 0 and float(item["hazy"].max()) <= 1
    again = ds[3]
    assert all(np.array_equal(item[k].numpy(), again[k].numpy()) for k in ("hazy", "clear"))
    ds.set_epoch(1)
    assert not np.array_equal(ds[3]["hazy"].numpy(), item["hazy"].numpy())
    with pytest.raises(ValueError, match="true depth"):
        CorunHaze(clear_records(reside / "GT", "flat"), crop=16, seed=0, length=5, recipe=HazeRecipe())


def test_mixture_of_reside_and_nyu(reside: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nyu = tmp_path / "nyu" / "bathroom_0001"
    nyu.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(nyu / "00001.jpg")
    Image.fromarray(rng.integers(1, 256, (40, 40), dtype=np.uint8)).save(nyu / "00001.png")
    mix = build_corun_mixture(
        [(reside, "reside", 1.0, ["1"]), (tmp_path / "nyu", "nyu", 1.0, [])], 16, 0, 40, HazeRecipe()
    )
    names = {mix[i]["name"].split("_corun")[0] for i in range(40)}
    assert names == {"2", "bathroom_0001/00001"}  # scene 1 excluded; both folders drawn
    with pytest.raises(ValueError, match="no depth"):
        build_corun_mixture([(reside / "GT", "flat", 1.0, [])], 16, 0, 4, HazeRecipe())
