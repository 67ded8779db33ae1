"""SIGTERM on a worker and on the API (real processes, real Redis): in-flight requests finish, nothing new is taken.

A worker that receives SIGTERM finishes and acknowledges the jobs it holds, takes no others, and exits 0; the jobs
still queued are served by the next worker. When it is killed before it finishes (Kubernetes sends SIGKILL once
terminationGracePeriodSeconds have passed), the job it held stays pending in the consumer group and another worker
reclaims it: the request is still answered, once. An API process that receives SIGTERM stops accepting connections at
once, keeps the requests it is serving until their results arrive, closes its queue and exits.
"""

from __future__ import annotations

import concurrent.futures
import re
import signal
from pathlib import Path

import httpx
import pytest
import redis

from tests.reliability.processes import (
    PREFIX,
    STREAM,
    assert_nothing_left,
    held_job_ids,
    service_env,
    service_process,
    start_workers,
    worker_consumers,
)
from tests.reliability.traffic import dehaze, expect_image, refuses_connections
from tests.service.live_server import free_port, live_server, model_settings, redis_worker, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def served_job_ids(log: str) -> set[str]:
    """Job ids of every batch a worker logged (``batch jobs=<id>,<id> ...``)."""
    return {job for line in re.findall(r"batch jobs=(\S+)", log) for job in line.split(",")}


def test_sigterm_on_a_worker_finishes_the_jobs_in_hand_and_takes_no_more(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    sizes = [(300 + 9 * i, 220 + 3 * i) for i in range(10)]  # six tiles each: one or two jobs per batch
    env = service_env(tiny_model, redis_url=redis_url)
    settings = model_settings(tiny_model, redis_url=redis_url)
    with (
        start_workers(1, env, tmp_path, redis_client) as (worker,),
        live_server(settings) as url,
        concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool,
    ):
        futures = [pool.submit(dehaze, url, size) for size in sizes]
        wait_until(lambda: bool(held_job_ids(redis_client, PREFIX, worker)), 60, "the worker to hold jobs")
        held = set(held_job_ids(redis_client, PREFIX, worker).values())
        consumers = worker_consumers(redis_client, PREFIX, worker)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        served = served_job_ids(worker.log())
        assert not held_job_ids(redis_client, PREFIX, worker)  # all it held is acknowledged: nothing to reclaim
        left = redis_client.xlen(STREAM)
        with redis_worker(settings):  # the next worker serves what the stopped one left in the queue
            responses = [future.result() for future in futures]
    assert held <= served, (held, served)
    assert len(served) < len(sizes) and left == len(sizes) - len(served)
    assert "SIGTERM received" in worker.log() and consumers
    for size, response in zip(sizes, responses, strict=True):
        expect_image(response, size)
    assert_nothing_left(redis_client)


def test_sigterm_on_the_api_finishes_in_flight_requests_and_refuses_new_ones(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    """No worker at first, so four requests stay in flight while the API is told to stop."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sizes = [(40 + i, 30 + i) for i in range(4)]
    env = service_env(tiny_model, redis_url=redis_url, port=port)
    with (
        service_process(["api"], env, tmp_path / "api.log") as api,
        concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool,
    ):
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "the API to listen")
        futures = [pool.submit(dehaze, url, size) for size in sizes]
        wait_until(lambda: redis_client.xlen(STREAM) == len(sizes), 30, "the requests to be queued")
        api.signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(url), 15, "the API to stop accepting connections")
        assert api.running() and not any(future.done() for future in futures)
        with redis_worker(model_settings(tiny_model, redis_url=redis_url)):
            responses = [future.result() for future in futures]
            status = api.wait(30)
        log = api.log()
    assert status in (0, -signal.SIGTERM), log[-3000:]  # uvicorn re-raises the signal once it has shut down
    assert "Waiting for connections to close" in log and "API stopped" in log  # graceful, lifespan closed
    for size, response in zip(sizes, responses, strict=True):
        expect_image(response, size)
    assert_nothing_left(redis_client)


def test_a_worker_killed_during_its_sigterm_drain_leaves_its_job_to_another_worker(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    """What a too-short terminationGracePeriodSeconds does: SIGTERM, then SIGKILL while the batch still runs."""
    fast_reclaim = {"claim_idle_ms": 1000, "heartbeat_s": 0.25}
    size = (1500, 1100)  # 156 tiles of 128 px: seconds of work for the tiny model, so the kill lands mid-job
    env = service_env(tiny_model, redis_url=redis_url, max_batch_size=1, **fast_reclaim)
    settings = model_settings(tiny_model, redis_url=redis_url, max_batch_size=1, **fast_reclaim)
    with (
        start_workers(1, env, tmp_path, redis_client) as (worker,),
        live_server(settings, timeout_s=180) as url,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        future = pool.submit(dehaze, url, size)
        wait_until(lambda: bool(held_job_ids(redis_client, PREFIX, worker)), 180, "the worker to hold the job")
        held = held_job_ids(redis_client, PREFIX, worker)
        worker.signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM received" in worker.log(), 60, "the worker to start draining")
        worker.signal(signal.SIGKILL)  # the grace period is over
        assert worker.wait(10) == -signal.SIGKILL
        assert held_job_ids(redis_client, PREFIX, worker) == held  # still pending for the dead consumer
        assert not future.done()
        with redis_worker(settings):  # claims it once idle for claim_idle_ms, computes it, answers
            response = future.result()
    expect_image(response, size)
    assert_nothing_left(redis_client)
