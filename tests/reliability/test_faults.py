"""Faults survived end to end, on the real Redis with workers as real OS processes.

* a worker SIGKILLed in the middle of a batch: its jobs are reclaimed by the other worker, every request is
  answered once and correctly;
* Redis killed and started again (empty) under a running API and worker: 503 while it is down, then both
  reconnect by themselves and requests succeed, nothing restarted;
* a poisoned job that kills every worker decoding it: failed after the delivery limit with a clear error, while
  the surviving worker serves the other requests;
* requests abandoned by the client (disconnect) or by the server (504): the worker never computes them, and their
  keys expire.

No job may be left behind: at the end the stream is empty, nothing is pending, and no payload, result or
cancellation key remains (a result stored twice would stay unconsumed).
"""

from __future__ import annotations

import concurrent.futures
import io
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image, PngImagePlugin

from tests.reliability.crashing_worker import POISON_MARKER
from tests.reliability.processes import (
    PREFIX,
    STREAM,
    assert_nothing_left,
    held_job_ids,
    leftover_keys,
    service_env,
    start_workers,
)
from tests.reliability.traffic import dehaze, expect_error, expect_image
from tests.service.live_server import image_bytes, live_server, model_settings, redis_worker, wait_until

FAST_RECLAIM = {"claim_idle_ms": 1000, "heartbeat_s": 0.25, "max_batch_wait_ms": 20}
"""A dead worker's jobs are reclaimed after one second instead of thirty."""

pytestmark = pytest.mark.redis


def batch_count(url: str) -> float:
    """Forwards run by the workers of this pytest process (``dehaze_batch_size_count``)."""
    found = re.search(r"^dehaze_batch_size_count (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(found[1]) if found else 0.0


@pytest.mark.slow
def test_worker_killed_mid_batch_loses_no_request(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    """Two workers, 24 requests in flight; one worker is SIGKILLed while it holds jobs."""
    sizes = [(300 + 7 * i, 220 + 5 * i) for i in range(24)]  # six tiles each: a few batches per worker
    env = service_env(tiny_model, redis_url=redis_url, **FAST_RECLAIM)
    settings = model_settings(tiny_model, redis_url=redis_url, **FAST_RECLAIM)
    with (
        start_workers(2, env, tmp_path, redis_client) as (victim, survivor),
        live_server(settings) as url,
        concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool,
    ):
        futures = [pool.submit(dehaze, url, size) for size in sizes]
        wait_until(lambda: bool(held_job_ids(redis_client, PREFIX, victim)), 60, "the victim to hold jobs")
        in_flight = sum(not future.done() for future in futures)
        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        held = held_job_ids(redis_client, PREFIX, victim)  # what it took and never acknowledged
        responses = [future.result() for future in futures]
        assert survivor.running()
        reclaimed = survivor.log()
    assert in_flight >= 20 and held
    for size, response in zip(sizes, responses, strict=True):
        expect_image(response, size)
    assert all(f"reclaimed job entry {entry_id}" in reclaimed for entry_id in held), (held, reclaimed[-2000:])
    assert_nothing_left(redis_client)


@pytest.mark.slow
def test_redis_restart_is_survived_without_restarting_anything(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_server: object, redis_url: str, redis_client: redis.Redis
) -> None:
    env = service_env(tiny_model, redis_url=redis_url, heartbeat_s=0.25)
    settings = model_settings(tiny_model, redis_url=redis_url, heartbeat_s=0.25)
    with start_workers(1, env, tmp_path, redis_client) as (worker,), live_server(settings) as url:
        expect_image(dehaze(url, (64, 48)), (64, 48))
        redis_server.stop()  # type: ignore[attr-defined]
        started = time.monotonic()
        down = dehaze(url, (64, 48))
        assert "unavailable" in expect_error(down, 503) and int(down.headers["retry-after"]) >= 1
        assert time.monotonic() - started < 15
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 503
        time.sleep(1.0)  # the worker notices too (its blocking read fails) and keeps retrying
        redis_server.start()  # type: ignore[attr-defined]  # empty: stream, group and heartbeats are gone
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, "the worker's heartbeat to return")
        for size in [(50, 40), (33, 65), (80, 20)]:
            expect_image(dehaze(url, size), size)
        assert worker.running()  # the very same process served before and after
        log = worker.log()
    # The group comes back with the API's first submission (it creates stream and group) or, if the worker reads
    # first, from the worker's NOGROUP handling ("re-creating it"): either way the same processes carry on.
    assert "the job queue is unavailable" in log
    assert_nothing_left(redis_client)


def poisoned_png() -> bytes:
    """A valid PNG carrying ``POISON_MARKER`` in a text chunk: ``crashing_worker`` dies decoding it."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", POISON_MARKER.decode())
    buffer = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(40, 30))).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.slow
def test_poisoned_job_fails_after_the_delivery_limit_and_the_workers_go_on(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    """Three workers, delivery limit 2: the poison kills two of them, the third fails it and serves the rest."""
    env = service_env(tiny_model, redis_url=redis_url, delivery_limit=2, **FAST_RECLAIM)
    settings = model_settings(tiny_model, redis_url=redis_url, delivery_limit=2, **FAST_RECLAIM)
    sizes = [(40 + i, 30 + 2 * i) for i in range(6)]
    module = "tests.reliability.crashing_worker"
    with (
        start_workers(3, env, tmp_path, redis_client, module) as workers,
        live_server(settings) as url,
        concurrent.futures.ThreadPoolExecutor(len(sizes) + 1) as pool,
    ):
        poison = pool.submit(dehaze, url, data=poisoned_png())
        wait_until(lambda: sum(not w.running() for w in workers) == 1, 60, "the first crash")
        others = [pool.submit(dehaze, url, size) for size in sizes]  # submitted while the poison is around
        message = expect_error(poison.result(), 500)
        for size, future in zip(sizes, others, strict=True):
            expect_image(future.result(), size)
        crashed = [worker.wait(1) for worker in workers if not worker.running()]
        assert sum(worker.running() for worker in workers) == 1
        assert httpx.get(f"{url}/readyz").status_code == 200
    assert message == "job failed 2 times; giving up"
    assert crashed == [-signal.SIGKILL, -signal.SIGKILL]
    assert_nothing_left(redis_client)


@pytest.mark.slow
def test_abandoned_requests_are_never_computed_and_their_keys_expire(
    tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    """No worker at first: one client hangs up, one request times out (504); then a worker starts."""
    settings = model_settings(tiny_model, redis_url=redis_url, result_ttl_s=4, request_timeout_s=1.5)
    with live_server(settings, wait_ready=False) as url:
        with pytest.raises(httpx.ReadTimeout):
            dehaze(url, (64, 48), timeout=httpx.Timeout(10.0, read=0.3))
        expect_error(dehaze(url, (64, 48)), 504)
        wait_until(lambda: len(leftover_keys(redis_client, PREFIX)) == 2, 10, "both jobs to be cancelled")
        keys = leftover_keys(redis_client, PREFIX)
        assert all(":cancelled:" in key and 0 < redis_client.pttl(key) <= 4000 for key in keys), keys
        assert redis_client.xlen(STREAM) == 2  # still queued: the worker must drop them without computing
        batches = batch_count(url)
        with redis_worker(settings):
            wait_until(lambda: redis_client.xlen(STREAM) == 0, 60, "the worker to drop the abandoned jobs")
            assert batch_count(url) == batches
        wait_until(lambda: leftover_keys(redis_client, PREFIX) == [], 10, "the cancellation markers to expire")
    assert_nothing_left(redis_client)
