"""Child processes of the tests and the benchmarks: ``dehaze`` commands, redis-server, Prometheus.

A :class:`Child` writes its output to a log file (or nowhere), and a failed start shows the tail of that log.
:func:`wait_ready` polls a readiness check and fails at once when a watched child exits; :func:`stop` sends SIGTERM
to every child first, so that several drain side by side, and kills what is left after a grace period.

A child started with ``own_group=True`` leads a new session, and its kill reaches the whole process group: the FADE
pool's spawned processes and multiprocessing's resource tracker would otherwise outlive a killed server, each
holding its memory, for the rest of the test session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
import redis

__all__ = [
    "NOT_YET",
    "REDIS_SERVER",
    "REPO",
    "Child",
    "NotReadyError",
    "RedisServer",
    "child_pids",
    "cpu_seconds",
    "dehaze_argv",
    "env_without_dehaze",
    "free_port",
    "group_pids",
    "paused",
    "process_alive",
    "process_tree",
    "redis_answers",
    "running",
    "stop",
    "wait_ready",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NOT_YET: tuple[type[Exception], ...] = (OSError, httpx.HTTPError, redis.RedisError)
"""Errors of a readiness check that mean "not yet": connection refused or reset by a server still starting."""
_LOG_TAIL_CHARS = 4000


class NotReadyError(AssertionError):
    """A child exited, or was not ready in time; the message ends with the children's log tails."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dehaze_argv(*args: str, module: str = "commands") -> list[str]:
    """``python -m module ARGS`` with this interpreter: the ``dehaze`` command, installed or not."""
    return [sys.executable, "-m", module, *args]


def env_without_dehaze(**settings: str) -> dict[str, str]:
    """This process's environment without any ``DEHAZE_*`` variable, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEHAZE_")}
    env.update(settings)
    return env


class Child:
    """One child process, its stdout and stderr going to ``log_path`` (nowhere when None).

    Args:
        argv: the command.
        log_path: the log file, created or truncated.
        env: its whole environment (None: this process's).
        cwd: its working folder (None: this process's).
        own_group: lead a new session, so that :meth:`kill` reaches every process it starts.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = REPO,
        own_group: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.own_group = own_group
        self._log: IO[bytes] | None = log_path.open("wb") if log_path is not None else None
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
        self.pgid = self.process.pid if own_group else os.getpgrp()
        """The child's process group: its own with ``own_group``, else this process's."""

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def name(self) -> str:
        """The log file's name, or the program's when there is no log."""
        return self.log_path.name if self.log_path is not None else Path(self.argv[0]).name

    def running(self) -> bool:
        """True while the child has not exited."""
        return self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the child alone, not to its group."""
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """The exit status (negative: killed by that signal); raises subprocess.TimeoutExpired after ``timeout_s``."""
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        """Everything the child wrote so far, also after it ended ("" without a log)."""
        if self.log_path is None:
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self) -> str:
        """The end of the log under a header naming it."""
        return f"--- {self.name} ---\n{self.log()[-_LOG_TAIL_CHARS:]}"

    def kill(self, wait_s: float = 30.0) -> None:
        """SIGKILL the child (with ``own_group``: its whole group, even once the child has exited), close the log.

        Waits up to ``wait_s`` for the child to be reaped and, with ``own_group``, for every other member of the
        group to end; a survivor after that is logged (:func:`group_pids` tells a test which).
        """
        try:
            with contextlib.suppress(ProcessLookupError):  # nothing left to kill
                if self.own_group:
                    os.killpg(self.pgid, signal.SIGKILL)
                else:
                    self.process.kill()
            self.process.wait(timeout=wait_s)
            if self.own_group:
                _wait_group_gone(self.pgid, wait_s)
        finally:
            if self._log is not None:
                self._log.close()


def stop(children: Sequence[Child], grace_s: float = 30.0, kill_wait_s: float = 30.0) -> None:
    """SIGTERM every running child in order, give each up to ``grace_s`` to exit, then :meth:`Child.kill` each.

    ``grace_s`` 0 kills at once, without SIGTERM.
    """
    if grace_s > 0:
        for child in children:
            if child.running():
                child.signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(grace_s)
    for child in children:
        child.kill(kill_wait_s)


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = REPO,
    own_group: bool = False,
    grace_s: float = 30.0,
    kill_wait_s: float = 30.0,
) -> Iterator[Child]:
    """A :class:`Child` that is stopped (:func:`stop`) when the block ends."""
    child = Child(argv, log_path, env, cwd=cwd, own_group=own_group)
    try:
        yield child
    finally:
        stop([child], grace_s, kill_wait_s)


def wait_ready(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    children: Sequence[Child] = (),
    interval_s: float = 0.05,
) -> float:
    """Seconds until ``check()`` is true, polled every ``interval_s``; a :data:`NOT_YET` error counts as false.

    Raises:
        NotReadyError: at once when one of ``children`` exits, or after ``timeout_s``.
    """
    started = time.monotonic()
    last_error: Exception | None = None
    while True:
        for child in children:
            if not child.running():
                problem = f"{child.name} exited with {child.process.returncode} while waiting for {what}"
                raise NotReadyError(_with_logs(problem, children))
        try:
            if check():
                return time.monotonic() - started
        except NOT_YET as error:
            last_error = error
        if time.monotonic() - started > timeout_s:
            problem = f"timed out after {timeout_s:g} s waiting for {what} (last error: {last_error!r})"
            raise NotReadyError(_with_logs(problem, children))
        time.sleep(interval_s)


def _with_logs(problem: str, children: Sequence[Child]) -> str:
    return "\n".join([problem, *(child.log_tail() for child in children if child.log_path is not None)])


# -- redis-server ----------------------------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a fixed loopback port, without persistence; ``url`` stays valid across restarts."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._child: Child | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server (unless running) and wait until it answers PING."""
        if self._child is not None:
            return
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._child = Child([*argv, "--dir", str(self._workdir)], cwd=None)
        try:
            what = f"redis-server on port {self.port}"
            wait_ready(lambda: redis_answers(self.port), timeout_s, what, [self._child], interval_s=0.02)
        except NotReadyError:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._child.pid if self._child is not None else None

    def stop(self) -> None:
        """Kill the server (no shutdown save) and wait for it to exit."""
        if self._child is not None:
            self._child.kill(wait_s=10)
            self._child = None

    def restart(self) -> None:
        """Stop and start again on the same port; all data is lost."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """Delete every key."""
        _redis_command(self.port, b"*1\r\n$8\r\nFLUSHALL\r\n")


def redis_answers(port: int) -> bool:
    """True when a Redis server on 127.0.0.1:``port`` answers PING."""
    try:
        return _redis_command(port, b"*1\r\n$4\r\nPING\r\n").startswith(b"+PONG")
    except OSError:
        return False


def _redis_command(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(raw)
        return sock.recv(64)


# -- processes from /proc (Linux) ------------------------------------------------------------------------------------
def group_pids(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run, re-parented ones included; zombies (no memory) are not."""
    return sorted(pid for pid, _, group in _running_processes() if group == pgid)


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    return any(running == pid for running, _, _ in _running_processes())


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` that still run."""
    return sorted(child for child, parent, _ in _running_processes() if parent == pid)


def process_tree(roots: Sequence[int]) -> list[int]:
    """The processes ``roots`` and all their descendants that still run."""
    children: dict[int, list[int]] = {}
    for pid, parent, _ in _running_processes():
        children.setdefault(parent, []).append(pid)
    tree, todo = set(), [root for root in roots if process_alive(root)]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(tree)


@contextlib.contextmanager
def paused(roots: Sequence[int]) -> Iterator[list[int]]:
    """Stop (SIGSTOP) the process trees of ``roots`` for the block, continue them (SIGCONT) after it.

    For benchmarks on a small machine: servers that are not being measured cannot take CPU from the one that is.
    """
    pids = process_tree(roots)
    stopped = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (ended ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := group_pids(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        logger.warning("processes %s of group %d survived SIGKILL for %.0f s", left, pgid, timeout_s)


def _running_processes() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process on this machine that is not a zombie."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:  # ended meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after its last ")"
        state, parent, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if state not in ("Z", "X"):
            yield int(entry.name), int(parent), int(group)
