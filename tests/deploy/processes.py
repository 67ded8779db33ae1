"""Start the real programs of a deployment (redis-server, `dehaze serve|api|worker`) as test subprocesses."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.deploy.conftest import REPO
from tests.deploy.prometheus_server import wait_for

__all__ = ["dehaze_env", "running"]


def dehaze_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``DEHAZE_*`` variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEHAZE_")}
    env.update(settings)
    return env


@contextlib.contextmanager
def running(
    command: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    timeout_s: float = 180,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (``dehaze ...`` runs as ``python -m service.cli ...``) until the block ends.

    Raises:
        AssertionError: if it exits or is not ``ready`` within ``timeout_s``; the message ends with its log.
    """
    if command[0] == "dehaze":
        command = [sys.executable, "-m", "service.cli", *command[1:]]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: process.poll() is None and ready(), timeout_s, f"{command} to be ready", interval_s=0.5)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n--- {log_path.name} ---\n{log_path.read_text()[-4000:]}") from error
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
