"""Measuring liveness while something else happens: ``/healthz`` polled from a separate process, every latency kept.

The poller is its own small process (``python -m tests.reliability.health URL INTERVAL``), so that what it measures
is the server, not the test process: a thread of the test process would also measure the test's own pauses (a full
garbage collection of a pytest process with torch loaded took 0.6 s here; hypothesis and image building hold the
GIL), and report them as slow answers.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["HEALTHZ_LIMIT_S", "HealthProbe", "probing_healthz"]

HEALTHZ_LIMIT_S = 0.1
"""``/healthz`` must answer within this while any single upload is being handled (issue 13)."""

_REPO = Path(__file__).resolve().parents[2]


@dataclass
class HealthProbe:
    """The latencies of every ``/healthz`` answer, and the failures, while the probe ran."""

    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def worst_s(self) -> float:
        """The slowest answer (infinite when none came)."""
        return max(self.latencies_s, default=float("inf"))

    def record(self, line: str) -> None:
        """One line of the poller: ``<seconds> <status>``, or ``error <what>``."""
        first, _, rest = line.strip().partition(" ")
        if first == "error":
            self.failures.append(rest)
            return
        self.latencies_s.append(float(first))
        if rest != "200":
            self.failures.append(f"status {rest}")

    def check(self, min_samples: int = 5, limit_s: float = HEALTHZ_LIMIT_S) -> None:
        """Every probe answered 200 within ``limit_s`` but one, that one within ``5 × limit_s``; ``min_samples`` ran.

        One outlier is a scheduler hiccup of this 2-core VM (seen: a single 111-166 ms answer among dozens of ~30 ms
        ones while other processes loaded the machine); a blocked event loop delays every probe that falls in the
        blocking work, and work of the kind these tests send (a FADE of a million pixels, a huge decode) blocks for
        seconds, far past either bound.
        """
        assert not self.failures, self.failures[:3]
        assert len(self.latencies_s) >= min_samples, f"only {len(self.latencies_s)} /healthz answers"
        slow = sorted(self.latencies_s)[-3:]
        over = [t for t in self.latencies_s if t >= limit_s]
        assert len(over) <= 1, f"{len(over)} /healthz answers took over {limit_s * 1000:.0f} ms (slowest: {slow})"
        assert self.worst_s < 5 * limit_s, f"/healthz took up to {self.worst_s * 1000:.0f} ms (slowest: {slow})"


@contextlib.contextmanager
def probing_healthz(url: str, interval_s: float = 0.02) -> Iterator[HealthProbe]:
    """Poll ``url``/healthz on one keep-alive connection every ``interval_s`` until the block ends.

    The block starts once the poller has its first answers.
    """
    probe = HealthProbe()
    poller = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.health", url, str(interval_s)],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout = poller.stdout
    assert stdout is not None

    def read() -> None:
        for line in stdout:
            probe.record(line)

    reader = threading.Thread(target=read, name="healthz-reader", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(probe.latencies_s) + len(probe.failures) < 3 and time.monotonic() < deadline:
            if poller.poll() is not None:
                raise AssertionError(f"the /healthz poller exited with {poller.returncode}")
            time.sleep(0.02)
        yield probe
    finally:
        poller.terminate()
        poller.wait(timeout=30)
        reader.join(timeout=10)


def _poll(url: str, interval_s: float) -> None:
    """The poller's loop: one line per answer on stdout, until terminated."""
    with httpx.Client(timeout=10) as client:
        while True:
            started = time.perf_counter()
            try:
                status = client.get(f"{url}/healthz").status_code
            except httpx.HTTPError as error:
                line = f"error {type(error).__name__}: {error}"
            else:
                line = f"{time.perf_counter() - started:.6f} {status}"
            sys.stdout.write(line + "\n")  # data for the parent, not a log line
            sys.stdout.flush()
            time.sleep(interval_s)


if __name__ == "__main__":
    _poll(sys.argv[1], float(sys.argv[2]))
