"""The process helper shared by the tests and the benchmarks (``tests.processes``), on tiny Python children."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from tests.processes import (
    NotReadyError,
    cpu_seconds,
    group_pids,
    paused,
    process_alive,
    process_tree,
    running,
    wait_ready,
)

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
SLEEPER = "import time; time.sleep(60)"
SPAWNS_SLEEPER = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "


def python(code: str) -> list[str]:
    """This interpreter running ``code``."""
    return [sys.executable, "-c", code]


def test_a_child_that_exits_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    expected = r"(?s)serve\.log exited with 3 while waiting for ready.*bad setting"
    with (
        running(python("print('bad setting'); raise SystemExit(3)"), tmp_path / "serve.log") as child,
        pytest.raises(NotReadyError, match=expected),
    ):
        wait_ready(lambda: False, 60, "ready", [child])


def test_a_timeout_names_what_was_awaited_and_the_last_error(tmp_path: Path) -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody listens")

    with (
        running(python(SLEEPER), tmp_path / "api.log", grace_s=0) as child,
        pytest.raises(NotReadyError, match=r"timed out after 0\.2 s waiting for /readyz.*nobody listens"),
    ):
        wait_ready(refused, 0.2, "/readyz", [child])


def test_stop_sends_sigterm_then_kills_a_child_that_ignores_it(tmp_path: Path) -> None:
    with running(python(IGNORES_SIGTERM + "time.sleep(60)"), tmp_path / "worker.log", grace_s=0.5) as child:
        wait_ready(lambda: "up" in child.log(), 60, "the child to start", [child])
    assert child.process.returncode == -signal.SIGKILL


def test_killing_an_own_group_child_ends_the_processes_it_started(tmp_path: Path) -> None:
    code = SPAWNS_SLEEPER + "print('up', flush=True); time.sleep(60)"
    with running(python(code), tmp_path / "serve.log", own_group=True, grace_s=0) as child:
        wait_ready(lambda: "up" in child.log() and len(group_pids(child.pgid)) == 2, 60, "the grandchild", [child])
        members = group_pids(child.pgid)
    assert not any(process_alive(pid) for pid in members)


BUSY_WITH_A_BUSY_CHILD = (
    "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'while True: pass']); "
    "print('up', flush=True)\nwhile True: pass"
)


def test_a_paused_tree_uses_no_cpu_and_runs_again_after(tmp_path: Path) -> None:
    """The benchmarks pause the servers they do not measure: the whole tree stops, and continues after."""
    with running(python(BUSY_WITH_A_BUSY_CHILD), tmp_path / "busy.log", own_group=True, grace_s=0) as child:
        wait_ready(lambda: "up" in child.log() and len(process_tree([child.pid])) == 2, 60, "the child", [child])
        tree = process_tree([child.pid])
        with paused([child.pid]) as stopped:
            assert sorted(stopped) == tree
            time.sleep(0.2)  # let the stop land
            before = cpu_seconds(tree)
            time.sleep(0.5)
            assert cpu_seconds(tree) - before < 0.05
        before = cpu_seconds(tree)
        time.sleep(0.5)
        assert cpu_seconds(tree) - before > 0.2
