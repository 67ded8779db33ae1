"""Tests for the haze model and the dark channel prior dehazer (model/physics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.physics import (
    box_filter,
    dark_channel,
    dcp_dehaze,
    dcp_depth,
    estimate_airlight,
    guided_filter,
    recover_radiance,
    synthesize_haze,
    transmission,
)

SOTS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "sots-indoor-train"
needs_sots = pytest.mark.skipif(not (SOTS / "GT" / "1400.webp").is_file(), reason="SOTS sample data not present")


def _load_rgb(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def _load_depth(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path), dtype=np.float32) / 65535.0
    return torch.from_numpy(array)[None, None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(((a - b) ** 2).mean()))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def _prior_scene(size: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A clear image that obeys the dark channel prior (one dark channel in every 4×4 block) and a smooth depth."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.rand(1, 3, size // 4, size // 4, generator=gen) * 0.8 + 0.2
    dark = torch.randint(0, 3, (1, 1, size // 4, size // 4), generator=gen)
    blocks = blocks.scatter(1, dark, 0.02)
    clear = torch.nn.functional.interpolate(blocks, scale_factor=4, mode="nearest")
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    depth = (0.6 * xs + 0.4 * ys**2)[None, None]
    return clear, depth


def test_transmission_values_and_per_sample_beta() -> None:
    depth = torch.full((2, 1, 3, 3), 0.5)
    t = transmission(depth, torch.tensor([1.0, 2.0]))
    assert torch.allclose(t[0], torch.full_like(t[0], float(np.exp(-0.5))))
    assert torch.allclose(t[1], torch.full_like(t[1], float(np.exp(-1.0))))


def test_synthesis_round_trips_with_known_t_and_airlight() -> None:
    gen = torch.Generator().manual_seed(1)
    clear = torch.rand(3, 3, 17, 23, generator=gen)
    depth = torch.rand(3, 1, 17, 23, generator=gen)
    beta = torch.tensor([0.6, 1.2, 1.8])
    airlight = torch.tensor([[0.7, 0.8, 0.9], [1.0, 1.0, 1.0], [0.85, 0.8, 0.75]])
    hazy = synthesize_haze(clear, depth, beta, airlight)
    assert not torch.allclose(hazy, clear, atol=0.05)
    restored = recover_radiance(hazy, transmission(depth, beta), airlight, t0=0.1)
    assert torch.allclose(restored, clear, atol=1e-5)


def test_synthesis_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        synthesize_haze(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 9), 1.0, 1.0)
    with pytest.raises(ValueError):
        synthesize_haze(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), torch.ones(3), 1.0)
    with pytest.raises(ValueError):
        dark_channel(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError):
        dark_channel(torch.rand(1, 3, 8, 8), patch=4)


def test_dark_channel_matches_naive_min_filter() -> None:
    img = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    got = dark_channel(img, patch=5)
    mins = img.amin(dim=1)[:, None]
    expected = torch.empty_like(got)
    for y in range(9):
        for x in range(11):
            window = mins[:, :, max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
            expected[:, :, y, x] = window.amin(dim=(2, 3))
    assert torch.equal(got, expected)


def test_box_filter_matches_naive_window_mean() -> None:
    x = torch.rand(1, 2, 7, 10, generator=torch.Generator().manual_seed(3))
    got = box_filter(x, radius=2)
    expected = torch.empty_like(x)
    for y in range(7):
        for c in range(10):
            expected[:, :, y, c] = x[:, :, max(0, y - 2) : y + 3, max(0, c - 2) : c + 3].mean(dim=(2, 3))
    assert torch.allclose(got, expected, atol=1e-5)


def test_guided_filter_keeps_edges_of_the_guide_and_smooths_noise() -> None:
    step = torch.zeros(1, 1, 32, 32)
    step[..., 16:] = 1.0
    noisy = step + 0.05 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    out = guided_filter(step, noisy, radius=4, eps=1e-3)
    assert (out - step).abs().mean() < 0.5 * (noisy - step).abs().mean()
    assert out[..., 15].mean() < 0.1 and out[..., 16].mean() > 0.9


def test_airlight_is_recovered_from_dense_haze() -> None:
    clear, depth = _prior_scene()
    true_a = torch.tensor([[0.9, 0.85, 0.8]])
    hazy = synthesize_haze(clear, depth, 4.0, true_a)
    airlight = estimate_airlight(hazy, dark_channel(hazy))
    assert airlight.shape == (1, 3, 1, 1)
    assert torch.allclose(airlight.flatten(), true_a.flatten(), atol=0.03)


def test_dcp_transmission_and_depth_follow_the_truth() -> None:
    clear, depth = _prior_scene()
    hazy = synthesize_haze(clear, depth, 1.5, 0.9)
    dehazed, trans = dcp_dehaze(hazy, patch=7)
    assert dehazed.shape == hazy.shape and trans.shape == depth.shape
    assert _corr(trans, transmission(depth, 1.5)) > 0.9
    assert _psnr(dehazed, clear) > _psnr(hazy, clear) + 5.0
    est_depth = dcp_depth(hazy)
    assert float(est_depth.min()) == 0.0 and float(est_depth.max()) == pytest.approx(1.0)
    assert _corr(est_depth, depth) > 0.9


def test_dcp_depth_of_a_flat_image_is_zero() -> None:
    assert torch.equal(dcp_depth(torch.full((1, 3, 20, 20), 0.5)), torch.zeros(1, 1, 20, 20))


@needs_sots
def test_synthesis_reproduces_a_sots_hazy_image() -> None:
    clear = _load_rgb(SOTS / "GT" / "1400.webp")
    depth = _load_depth(SOTS / "depth" / "1400.png")
    params = json.loads((SOTS / "haze_params.json").read_text())["1400"]["5"]
    hazy = synthesize_haze(clear, depth, params["beta_rel"], params["A"])
    assert _psnr(hazy, _load_rgb(SOTS / "hazy" / "1400_5.webp")) > 40.0


@needs_sots
def test_dcp_improves_psnr_on_a_sots_pair() -> None:
    clear = _load_rgb(SOTS / "GT" / "1400.webp")
    hazy = _load_rgb(SOTS / "hazy" / "1400_5.webp")
    dehazed, trans = dcp_dehaze(hazy)
    assert float(trans.min()) >= 0.0 and float(trans.max()) <= 1.0
    assert float(dehazed.min()) >= 0.0 and float(dehazed.max()) <= 1.0
    assert _psnr(dehazed, clear) > _psnr(hazy, clear) + 5.0
