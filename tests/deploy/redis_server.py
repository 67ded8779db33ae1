"""A redis-server started from a redis.conf (the Kubernetes manifest's), for the durability test and the benchmark.

The manifest's ``dir`` is the pod's volume (/data); Redis changes into ``dir`` while it reads the file, so the file
is written again with ``dir`` pointing at a local folder (and any other changes), then started on a free port.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.processes import REDIS_SERVER, redis_answers, running, wait_ready

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
    """``redis-server CONF`` on 127.0.0.1:PORT, once it answers PING; killed (SIGKILL) when the block ends.

    Raises:
        tests.processes.NotReadyError: if it exits or does not answer within ``timeout_s``.
    """
    argv = [REDIS_SERVER, str(conf), "--port", str(port), "--bind", "127.0.0.1"]
    with running(argv, cwd=None, grace_s=0, kill_wait_s=10) as child:
        wait_ready(lambda: redis_answers(port), timeout_s, f"redis-server on port {port}", [child])
        yield child.process
