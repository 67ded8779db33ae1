"""The process helpers stop what they start: no process of a stopped server survives it.

``dehaze serve`` starts a FADE pool (spawned processes) and multiprocessing's resource tracker. When the helper
SIGKILLed only the server, as the fault tests and every fixture's teardown did, those processes outlived it for
the rest of the test session, each holding its memory and competing for the CPU.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from tests.reliability.processes import (
    ServiceProcess,
    child_pids,
    group_pids,
    process_alive,
    service_env,
    service_process,
)
from tests.service.live_server import free_port, wait_until

logger = logging.getLogger(__name__)


def _pool_started(child: ServiceProcess) -> bool:
    """True once one of ``child``'s children is a spawned multiprocessing process (the FADE pool's).

    Raises:
        AssertionError: when the server has exited (with its log).
    """
    if not child.running():
        raise AssertionError(f"the server exited with {child.process.returncode}:\n{child.log()[-3000:]}")
    for pid in child_pids(child.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if b"spawn_main" in command:
            return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sigkill_first", [True, False], ids=["sigkilled-then-closed", "closed"])
def test_no_process_of_a_stopped_server_survives(
    tmp_path: Path, tiny_model: tuple[Path, Path], sigkill_first: bool
) -> None:
    """A ``dehaze serve`` runs child processes; after the helper stops it, none of them runs.

    The test waits for the pool's process to exist, not for readiness: the pool runs under ``SCHED_IDLE``, so on
    a machine kept busy by other work its warm-up (which /readyz waits for) may take minutes.
    """
    env = service_env(tiny_model, port=free_port())
    with service_process(["serve"], env, tmp_path / "serve.log") as child:
        wait_until(lambda: _pool_started(child), 120, "the server's FADE pool process")
        children, group = child_pids(child.pid), group_pids(child.pgid)
        logger.info("server %d: children %s, process group %s", child.pid, children, group)
        assert set(children) < set(group) and child.pid in group
        if sigkill_first:  # as the fault tests kill a server
            child.signal(signal.SIGKILL)
            assert child.wait(30) == -signal.SIGKILL
            orphans = [pid for pid in children if process_alive(pid)]
            logger.info("children still running after the server was SIGKILLed: %s", orphans)
    survivors = [pid for pid in {*children, *group} if process_alive(pid)]
    assert survivors == [], f"processes of the stopped server still run: {survivors}"
    assert group_pids(child.pgid) == []
