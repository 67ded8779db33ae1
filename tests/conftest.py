"""Shared fixtures: a private redis-server for the tests marked ``redis``.

``redis_server`` (session scope) starts ``redis-server`` (``tests.processes.RedisServer``) on a free loopback port
without persistence (``--save "" --appendonly no``) and kills it at the end. It can be stopped, started again on the
same port, or restarted, for fault tests (a restarted server is empty, as after a crash without persistence).
``redis_url`` (function scope) flushes the database and gives the URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import REDIS_SERVER, RedisServer, free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the session (skips when the binary is missing)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's URL, with an empty database (the server is started again if a test stopped it)."""
    redis_server.start()
    redis_server.flush()
    return redis_server.url
