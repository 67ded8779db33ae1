"""glibc ``malloc`` settings for CPU inference: keep large tensor buffers in the heap instead of mmap/munmap.

A forward pass of DCMPNet allocates and frees activations of tens of megabytes. With glibc's defaults each one
above the dynamic mmap threshold (at most 32 MiB) is a fresh ``mmap``, page-faulted and zeroed by the kernel, then
``munmap``-ed; freed heap tops are trimmed back to the OS as well. On the 2-core CPU machine a 620×460 forward of
``dcmpnet_small`` spent about a third of its time in the kernel this way (``sys`` 8.6 s of 31 s CPU;
median forward 2.05 s, 1.24 s with these settings). Keeping those buffers in the heap and using one arena (so
that a worker thread's allocations share the main heap, which can grow past the 64 MiB of a thread arena) removes
that cost. The price: freed memory stays in the process for reuse instead of going back to the OS, so RSS stays
near its high-water mark, which is the model's peak anyway (bench_memory and bench_soak measure both).

Applied by the ``dehaze`` command at start (``commands.cli.main``), before any thread exists. ``DEHAZE_MALLOC_TUNING=0``
turns it off. On other C libraries (musl, macOS, Windows) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

from pydantic import TypeAdapter, ValidationError

__all__ = ["ENV_SWITCH", "LARGE", "set_malloc_options", "tune_for_inference"]

logger = logging.getLogger(__name__)

ENV_SWITCH = "DEHAZE_MALLOC_TUNING"
LARGE = 1 << 30  # 1 GiB: allocations below it come from the heap, and free heap tops below it are kept

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def set_malloc_options(mmap_threshold: int, trim_threshold: int, arena_max: int | None = None) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) and, optionally, its arena limit.

    Returns:
        True when every option was accepted; False on a C library without ``mallopt``.
    """
    libc = _glibc()
    if libc is None:
        return False
    options = [(_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)]
    if arena_max is not None:
        options.append((_M_ARENA_MAX, arena_max))
    return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in options)


def tune_for_inference() -> bool:
    """Apply the settings described in the module docstring unless ``DEHAZE_MALLOC_TUNING=0``.

    Returns:
        True when applied.
    """
    try:  # parsed as the service's settings parse it (``Settings.malloc_tuning``), which reject a bad value
        enabled = TypeAdapter(bool).validate_python(os.environ.get(ENV_SWITCH, "1").strip())
    except ValidationError:
        enabled = True
    if not enabled:
        logger.debug("%s is off: glibc malloc defaults kept", ENV_SWITCH)
        return False
    applied = set_malloc_options(LARGE, LARGE, arena_max=1)
    logger.debug("malloc tuned for inference: %s", applied)
    return applied
