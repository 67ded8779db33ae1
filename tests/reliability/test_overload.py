"""Beyond capacity, under real load: 503 with Retry-After at once, the queue never longer than its limit.

Twenty-four clients upload at the same moment to a service whose queue holds three jobs, with a worker busy on
them. The accepted requests are served; every other one is refused with 503, ``Retry-After`` and the JSON error
shape, quickly (no waiting in line); and the queue depth sampled throughout never exceeds the limit. Both queue
backends are checked: the in-process queue and Redis (the Lua-checked bound). The soak benchmark
(``tests/benchmarks/bench_soak.py``) measures the same at length.
"""

from __future__ import annotations

import concurrent.futures
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.traffic import expect_error, expect_image
from tests.service.live_server import live_server, model_settings, redis_worker

QUEUE_LIMIT = 3
CLIENTS = 24
REFUSAL_LIMIT_S = 3.0
"""A 503 must come back within this time: it is decided from the header and one queue call, with no waiting. The
limit is loose for busy CI machines (the server shares this process with 24 client threads and the worker); the
sharper check is that every refusal comes back before the first served answer."""


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def small_queue(request: pytest.FixtureRequest, tiny_model: tuple[Path, Path]) -> Iterator[str]:
    """A ready service whose queue holds ``QUEUE_LIMIT`` jobs, with either backend."""
    limits = {"max_queue_length": QUEUE_LIMIT, "max_batch_size": 4}
    if request.param == "embedded":
        with live_server(model_settings(tiny_model, **limits)) as url:
            yield url
        return
    redis_url = request.getfixturevalue("redis_url")
    settings = model_settings(tiny_model, redis_url=redis_url, **limits)
    with redis_worker(settings), live_server(settings) as url:
        yield url


def gradient_png(width: int, height: int) -> bytes:
    """A smooth image: a few kilobytes to upload and to refuse, yet as many tiles to compute as any other."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def timed_dehaze(url: str, size: tuple[int, int], start: threading.Barrier) -> tuple[httpx.Response, float]:
    """Encode the image, wait for every client, then upload; returns the answer and its latency in seconds."""
    files = {"image": ("upload.png", gradient_png(*size), "image/png")}
    with httpx.Client(timeout=180) as client:  # made before the clock starts: it costs a TLS context
        start.wait()
        began = time.perf_counter()
        response = client.post(f"{url}/dehaze", files=files)
        return response, time.perf_counter() - began


def sample_depth(url: str, done: threading.Event) -> list[int]:
    """Queue depths reported by /readyz until ``done`` is set."""
    depths = []
    with httpx.Client(timeout=5) as client:
        while not done.is_set():
            depths.append(int(client.get(f"{url}/readyz").json()["queue_depth"]))
            time.sleep(0.01)
    return depths


@pytest.mark.slow
def test_beyond_capacity_is_503_with_retry_after_quickly_and_the_queue_stays_bounded(small_queue: str) -> None:
    sizes = [(768 + i, 512) for i in range(CLIENTS)]  # 35 tiles each: serving one takes several forwards
    start, done = threading.Barrier(CLIENTS), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS + 1) as pool:
        sampler = pool.submit(sample_depth, small_queue, done)
        futures = [pool.submit(timed_dehaze, small_queue, size, start) for size in sizes]
        answers = [future.result() for future in futures]
        done.set()
        depths = sampler.result()
    refused = [(response, seconds) for response, seconds in answers if response.status_code == 503]
    served = [
        (size, response) for size, (response, _) in zip(sizes, answers, strict=True) if response.status_code == 200
    ]
    assert refused and len(served) >= QUEUE_LIMIT, [response.status_code for response, _ in answers]
    for response, seconds in refused:
        assert "queue is full" in expect_error(response, 503)
        assert int(response.headers["retry-after"]) >= 1
        assert seconds < REFUSAL_LIMIT_S, f"a refusal took {seconds:.2f} s"
    for size, response in served:
        expect_image(response, size)
    slowest_refusal = max(seconds for _, seconds in refused)
    fastest_service = min(seconds for response, seconds in answers if response.status_code == 200)
    assert slowest_refusal < fastest_service, "a refused request waited as long as a served one"
    assert depths and max(depths) <= QUEUE_LIMIT, depths
