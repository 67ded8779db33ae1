"""Shared fixtures: a private redis-server for the tests marked ``redis``.

``redis_server`` (session scope) starts ``redis-server`` on a free loopback port without persistence
(``--save "" --appendonly no``) and kills it at the end. It can be stopped, started again on the same port, or
restarted, for fault tests (a restarted server is empty, as after a crash without persistence).
``redis_url`` (function scope) flushes the database and gives the URL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server child process on a fixed port (``url`` stays valid across restarts)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self._process is not None:
            return
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            [*command, "--dir", str(self._workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Kill the server (no shutdown save) and wait for it to exit."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port; all data is lost."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """Delete every key."""
        self._command(b"*1\r\n$8\r\nFLUSHALL\r\n")

    def _answers(self) -> bool:
        try:
            return self._command(b"*1\r\n$4\r\nPING\r\n").startswith(b"+PONG")
        except OSError:
            return False

    def _command(self, raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
            sock.sendall(raw)
            return sock.recv(64)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the session (skips when the binary is missing)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    server = RedisServer(_free_port(), tmp_path_factory.mktemp("redis"))
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
