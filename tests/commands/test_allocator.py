"""commands.allocator: in a fresh process, a large freed buffer stays in the heap when tuned and goes back otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from commands.allocator import ENV_SWITCH

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

_PROBE = """
import numpy as np
from commands.allocator import tune_for_inference
applied = tune_for_inference()
buffer = np.ones(256 << 20, dtype=np.uint8)  # 256 MiB, every page touched
del buffer
pages = int(open("/proc/self/statm").read().split()[1])
print(applied, pages * 4096)
"""


def _probe(switch: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != ENV_SWITCH}
    if switch is not None:
        env[ENV_SWITCH] = switch
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    applied, rss = out.stdout.split()
    return applied == "True", int(rss)


def test_tuned_process_keeps_a_large_freed_buffer_for_reuse() -> None:
    applied, tuned_rss = _probe(None)
    off, default_rss = _probe("0")
    assert applied and not off
    assert tuned_rss - default_rss > 200 << 20  # glibc's default munmaps the 256 MiB at once


def test_switch_off_spellings_keep_the_defaults() -> None:
    for spelling in ("false", "OFF", "no"):
        assert _probe(spelling)[0] is False
