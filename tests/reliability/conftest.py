"""Fixtures of the reliability tests: the tiny model, a Redis client, and one ``dehaze serve`` for the input tests.

``served`` is the embedded service (API and worker in one OS process, in-process queue) with small limits, so
that hostile uploads are cheap to build and the server's memory can be read from /proc without counting pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.reliability.processes import ServiceProcess, service_env, service_process, wait_http_ready
from tests.service.live_server import free_port, tiny_model, tiny_weights

__all__ = ["SERVED_LIMITS", "Served", "redis_client", "served", "tiny_model", "tiny_weights"]

SERVED_LIMITS = {"max_upload_bytes": 1_000_000, "max_pixels": 1_000_000}
"""The upload limits of ``served``: 1 MB and 1 megapixel."""


@dataclass(frozen=True)
class Served:
    """A running ``dehaze serve``: its base URL and its process."""

    url: str
    process: ServiceProcess


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: tuple[Path, Path]) -> Iterator[Served]:
    """``dehaze serve`` on a free port with ``SERVED_LIMITS``, ready (model warmed); stopped after the session."""
    port = free_port()
    env = service_env(tiny_model, port=port, max_batch_wait_ms=5, **SERVED_LIMITS)
    log = tmp_path_factory.mktemp("served") / "serve.log"
    with service_process(["serve"], env, log) as child:
        url = f"http://127.0.0.1:{port}"
        wait_http_ready(url, child)
        yield Served(url, child)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the private test Redis (emptied for the test), to look at the queue from outside."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()
