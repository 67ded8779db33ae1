"""FADE off the inference path: the size bound, the process pool, the metric, and its cost per megapixel."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from service.density import MAX_FADE_PIXELS, DensityScorer, fade_of_array, fade_of_bytes, fade_size, shrink_for_fade

logger = logging.getLogger(__name__)


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured clear-looking uint8 RGB image."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    pattern = np.stack([(xs * 9) % 256, (ys * 13) % 256, ((xs ^ ys) * 3) % 256], axis=-1)
    return np.clip(0.7 * pattern + 0.3 * rng.integers(0, 256, pattern.shape), 0, 255).astype(np.uint8)


def _hazy(clear: np.ndarray, transmission: float = 0.35, airlight: float = 230.0) -> np.ndarray:
    """The scattering model with a constant transmission: I = J t + A (1 - t)."""
    return np.clip(clear * transmission + airlight * (1 - transmission), 0, 255).astype(np.uint8)


def _density_count() -> float:
    return REGISTRY.get_sample_value("dehaze_density_seconds_count") or 0.0


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_shrink_bounds_pixels_and_keeps_aspect() -> None:
    image = Image.new("RGB", (4000, 1000))
    small = shrink_for_fade(image, max_pixels=250_000)
    assert small.width * small.height <= 250_000
    assert abs(small.width / small.height - 4.0) < 0.02
    untouched = Image.new("RGB", (100, 50))
    assert shrink_for_fade(untouched, max_pixels=250_000) is untouched


@pytest.mark.parametrize(
    "size", [(1, 1_000_000), (1_000_000, 1), (1, 16_777_216), (3, 2_000_000), (20, 800_000), (4000, 3000), (17, 65536)]
)
def test_the_padded_fade_size_is_bounded_at_every_aspect_ratio(size: tuple[int, int]) -> None:
    """FADE pads sides under 16 px: the padded size, not the image's, must fit (1×1,000,000 was scored at 16 MP)."""
    width, height = fade_size(*size, MAX_FADE_PIXELS)
    assert 1 <= width <= size[0] and 1 <= height <= size[1]
    assert max(width, 16) * max(height, 16) <= MAX_FADE_PIXELS
    assert fade_size(100, 50, MAX_FADE_PIXELS) == (100, 50)


def test_fade_of_a_thin_array_is_shrunk_to_the_bound_itself() -> None:
    thin = _scene(2, 300_000)
    fade_of_array(_scene(64, 64))  # loads the reference models
    started = time.perf_counter()
    score = fade_of_array(thin, max_pixels=64 * 64)  # scored at 2×256, padded to 16×256
    assert time.perf_counter() - started < 5 and (np.isnan(score) or score > 0)


def test_haze_raises_fade() -> None:
    clear = _scene(96, 128)
    assert fade_of_array(_hazy(clear)) > 1.5 * fade_of_array(clear)


def test_tiny_images_are_padded_not_rejected() -> None:
    assert np.isfinite(fade_of_array(_scene(5, 3)))


def test_fade_of_bytes_matches_the_array_and_rejects_garbage() -> None:
    rgb = _scene(64, 80)
    assert fade_of_bytes(_png(rgb)) == pytest.approx(fade_of_array(rgb))
    with pytest.raises(ValueError, match="decode"):
        fade_of_bytes(b"not an image")


def test_scorer_pool_matches_direct_computation_and_records_the_metric() -> None:
    rgb = _scene(48, 64, seed=3)
    before = _density_count()

    async def score() -> tuple[float, float]:
        scorer = DensityScorer(workers=1)
        try:
            return await scorer.score_bytes(_png(rgb)), await scorer.score_array(rgb)
        finally:
            scorer.close()

    from_bytes, from_array = asyncio.run(score())
    assert from_bytes == pytest.approx(fade_of_array(rgb)) and from_array == pytest.approx(from_bytes)
    assert _density_count() == before + 2


def test_scorer_shrinks_large_arrays_before_sending_them() -> None:
    big = _scene(1200, 1000)  # 1.2 MP > 1 MP

    async def score() -> float:
        scorer = DensityScorer(workers=1, max_pixels=MAX_FADE_PIXELS)
        try:
            return await scorer.score_array(big)
        finally:
            scorer.close()

    expected = fade_of_array(np.asarray(shrink_for_fade(Image.fromarray(big))))
    assert asyncio.run(score()) == pytest.approx(expected)


def test_cost_per_megapixel(capsys: pytest.CaptureFixture[str]) -> None:
    """Measure FADE's cost on one core (printed with ``pytest -s``); a loose bound guards against regressions."""
    fade_of_array(_scene(64, 64))  # loads the reference models
    rgb = _scene(512, 512)
    started = time.perf_counter()
    fade_of_array(rgb)
    per_megapixel = (time.perf_counter() - started) / (rgb.shape[0] * rgb.shape[1] / 1e6)
    with capsys.disabled():
        print(f"\nFADE cost: {per_megapixel:.2f} s per megapixel (512x512 image)")
    assert per_megapixel < 30


def test_pool_processes_yield_the_cpu_to_inference() -> None:
    """FADE runs only on otherwise idle CPU (SCHED_IDLE on Linux, else a high niceness): see bench_fade."""
    scorer = DensityScorer(workers=1)
    try:
        pool_niceness = scorer._pool.submit(os.nice, 0).result(timeout=120)
        policy = scorer._pool.submit(os.sched_getscheduler, 0).result(timeout=120) if sys.platform == "linux" else None
    finally:
        scorer.close()
    assert pool_niceness >= min(19, os.nice(0) + 1)
    if sys.platform == "linux":
        assert policy == os.SCHED_IDLE


def test_readiness_waits_for_the_pool_and_a_failed_warm_up_does_not_block_it() -> None:
    from service.api.routes.health import readiness
    from service.api.state import Services
    from service.config import Settings
    from service.queue.memory import MemoryQueue

    async def check() -> tuple[list[str], list[str], bool]:
        queue = MemoryQueue(max_length=4)
        await queue.heartbeat("w1")
        scorer = DensityScorer(workers=1)
        services = Services(settings=Settings(), queue=queue, density=scorer)
        try:
            cold = (await readiness(services)).reasons
            await scorer.warm_up()
            warm = (await readiness(services)).reasons
        finally:
            scorer.close()
        broken = DensityScorer(workers=1)
        broken.close()  # a pool that cannot score: its warm-up fails, and is logged
        await broken.warm_up()
        return cold, warm, broken.warmed

    cold, warm, broken_warmed = asyncio.run(check())
    assert cold == ["the FADE pool is still starting"]
    assert warm == []
    assert broken_warmed
