"""A redis-server started from a redis.conf (the Kubernetes manifest's), for the durability test and the benchmark.

The manifest's ``dir`` is the pod's volume (/data); Redis changes into ``dir`` while it reads the file, so the file
is written again with ``dir`` pointing at a local folder (and any other changes), then started on a free port.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.conftest import REDIS_SERVER

__all__ = ["BASE_REDIS_CONFIG", "base_redis_conf", "redis_process", "write_conf"]

BASE_REDIS_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "redis-config.yaml"


def base_redis_conf() -> str:
    """The redis.conf text of the base ConfigMap ``redis-config`` (no overlay changes it)."""
    return str(yaml.safe_load(BASE_REDIS_CONFIG.read_text(encoding="utf-8"))["data"]["redis.conf"])


def write_conf(text: str, folder: Path, name: str = "redis.conf", **changes: str) -> Path:
    """``text`` with ``dir`` = ``folder`` and each ``changes`` key set to its value, written to ``folder/name``."""
    changes = {"dir": str(folder), **changes}
    lines = [line for line in text.splitlines() if line.split(" ", 1)[0] not in changes]
    conf = folder / name
    conf.write_text("\n".join([*lines, *(f"{key} {value}" for key, value in changes.items())]) + "\n", "utf-8")
    return conf


@contextlib.contextmanager
def redis_process(conf: Path, port: int, timeout_s: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """``redis-server CONF`` on 127.0.0.1:PORT, once it answers PING; killed (SIGKILL) when the block ends."""
    command = [REDIS_SERVER, str(conf), "--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(port):
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {timeout_s:g} s")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False
