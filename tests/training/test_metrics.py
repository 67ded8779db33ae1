"""Metrics against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.metrics import PSNR_CAP_DB, depth_errors, fade, mean_finite_psnr, psnr, ssim


def test_psnr_identical_is_inf_and_capped_in_means() -> None:
    img = np.random.default_rng(0).random((8, 8, 3))
    assert psnr(img, img) == math.inf
    assert mean_finite_psnr([math.inf, 20.0]) == pytest.approx((PSNR_CAP_DB + 20.0) / 2)


def test_psnr_known_mse_and_tensor_input() -> None:
    gt = np.zeros((4, 4, 3))
    pred = np.full((4, 4, 3), 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(pred, gt) == pytest.approx(20.0)
    assert psnr(torch.full((1, 3, 4, 4), 0.1), torch.zeros(3, 4, 4)) == pytest.approx(20.0, abs=1e-5)


def test_ssim_identical_and_different() -> None:
    img = np.random.default_rng(1).random((16, 16, 3))
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(np.clip(img + 0.3, 0, 1), img) < 0.95
    assert ssim(img[:5, :5], img[:5, :5]) == pytest.approx(1.0)  # window shrinks for tiny images
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(img, img[:8])


def test_depth_errors_scale_invariant_and_ignores_zero() -> None:
    gt = np.random.default_rng(2).uniform(0.1, 1.0, (10, 10, 1))
    gt[0, 0] = 0.0
    pred = 3.7 * gt
    pred[0, 0] = 123.0  # an invalid pixel, must be ignored
    absrel, delta1 = depth_errors(pred, gt)
    assert absrel == pytest.approx(0.0, abs=1e-9) and delta1 == 1.0
    absrel, delta1 = depth_errors(np.full_like(gt, 0.5), np.where(np.arange(100).reshape(10, 10, 1) < 49, 1.0, 2.0))
    assert absrel == pytest.approx(0.49) and delta1 == pytest.approx(0.51)  # median scaling maps 0.5 -> 2
    with pytest.raises(ValueError, match="no pixel"):
        depth_errors(gt, np.zeros_like(gt))


def test_fade_lower_for_clear_than_for_hazy() -> None:
    rng = np.random.default_rng(3)
    clear = rng.random((48, 48, 3))
    hazy = 0.3 * clear + 0.7
    assert fade(clear) < fade(hazy)
    assert np.isfinite(fade(clear[:10, :7]))
