"""Queue-related answers over real TCP: 503 queue full, 504 timeout, readiness, late workers, API keys."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.service.live_server import (
    image_bytes,
    live_server,
    model_settings,
    redis_worker,
    tiny_model,
    tiny_weights,
    wait_until,
)

__all__ = ["tiny_model", "tiny_weights"]  # session fixtures, re-exported for pytest


def _post(url: str, path: str = "/dehaze", timeout: float | httpx.Timeout = 60, **kwargs: object) -> httpx.Response:
    files = {"image": ("upload.png", image_bytes(32, 24), "image/png")}
    return httpx.post(f"{url}{path}", files=files, timeout=timeout, **kwargs)  # type: ignore[arg-type]


def _error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["status"] == status


@pytest.mark.redis
def test_full_queue_is_503_with_retry_after(redis_server: object, tiny_model: tuple[Path, Path]) -> None:
    """No worker runs, so the first job stays queued and the queue (length 1) is full for the second."""
    redis_server.flush()  # type: ignore[attr-defined]
    settings = model_settings(
        tiny_model,
        redis_url=redis_server.url,
        max_queue_length=1,
        request_timeout_s=5.0,  # type: ignore[attr-defined]
    )
    with live_server(settings, wait_ready=False) as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, url)
        wait_until(lambda: "dehaze_queue_depth 1.0" in httpx.get(f"{url}/metrics").text, 10, "the first job queued")
        second = _post(url)
        _error(second, 503)
        assert int(second.headers["retry-after"]) >= 1
        _error(first.result(), 504)  # nobody served it


@pytest.mark.redis
def test_no_result_in_time_is_504(redis_server: object, tiny_model: tuple[Path, Path]) -> None:
    redis_server.flush()  # type: ignore[attr-defined]
    settings = model_settings(tiny_model, redis_url=redis_server.url, request_timeout_s=0.5)  # type: ignore[attr-defined]
    with live_server(settings, wait_ready=False) as url:
        started = time.monotonic()
        _error(_post(url), 504)
        assert time.monotonic() - started < 10


@pytest.mark.redis
def test_readiness_follows_the_worker_and_a_late_worker_serves_queued_jobs(
    redis_server: object, tiny_model: tuple[Path, Path]
) -> None:
    redis_server.flush()  # type: ignore[attr-defined]
    settings = model_settings(tiny_model, redis_url=redis_server.url, heartbeat_s=0.2)  # type: ignore[attr-defined]
    with live_server(settings, wait_ready=False) as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        before = httpx.get(f"{url}/readyz")
        assert before.status_code == 503 and any("worker" in r for r in before.json()["reasons"])
        queued = pool.submit(_post, url)  # submitted while no worker exists
        wait_until(lambda: "dehaze_queue_depth 1.0" in httpx.get(f"{url}/metrics").text, 10, "the job queued")
        with redis_worker(settings):
            assert queued.result().status_code == 200
            wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, "/readyz after the worker started")
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503, 30, "/readyz after the worker stopped")


@pytest.mark.redis
def test_unreachable_queue_is_503(redis_server: object, tiny_model: tuple[Path, Path]) -> None:
    settings = model_settings(tiny_model, redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    with live_server(settings, wait_ready=False) as url:
        _error(_post(url), 503)
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and any("unreachable" in r for r in ready.json()["reasons"])


def test_api_keys_guard_the_work_endpoints_only(tiny_model: tuple[Path, Path]) -> None:
    with live_server(model_settings(tiny_model, api_keys="alpha, beta")) as url:
        _error(_post(url), 401)
        _error(_post(url, headers={"Authorization": "Bearer gamma"}), 401)
        _error(_post(url, "/density", headers={"Authorization": "alpha"}), 401)  # scheme missing
        assert _post(url, headers={"Authorization": "Bearer beta"}).status_code == 200
        assert _post(url, "/depth", headers={"Authorization": "Bearer alpha"}).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert httpx.get(f"{url}{open_path}").status_code == 200, open_path


@pytest.mark.redis
def test_client_disconnect_cancels_its_job(redis_server: object, tiny_model: tuple[Path, Path]) -> None:
    """No worker runs; the job of a client that gives up is cancelled (marker key) and the request counts as 499."""
    redis_server.flush()  # type: ignore[attr-defined]
    settings = model_settings(tiny_model, redis_url=redis_server.url)  # type: ignore[attr-defined]
    with live_server(settings, wait_ready=False) as url:
        with pytest.raises(httpx.ReadTimeout):
            _post(url, timeout=httpx.Timeout(10.0, read=0.5))
        wait_until(lambda: 'route="/dehaze",status="499"' in httpx.get(f"{url}/metrics").text, 10, "the 499")
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        wait_until(lambda: bool(client.keys(f"{settings.queue_name}:cancelled:*")), 10, "the cancellation marker")
    finally:
        client.close()


def test_embedded_readiness_reports_a_worker_that_cannot_load_the_model(
    tmp_path: Path, tiny_model: tuple[Path, Path]
) -> None:
    weights, _ = tiny_model
    settings = model_settings((weights, tmp_path / "missing.ts.pt"))
    with live_server(settings, wait_ready=False) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive, but not ready
        wait_until(lambda: "stopped" in " ".join(httpx.get(f"{url}/readyz").json()["reasons"]), 30, "the reason")
        assert httpx.get(f"{url}/readyz").status_code == 503
