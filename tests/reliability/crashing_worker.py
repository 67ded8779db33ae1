"""Fault injection: the real ``dehaze`` command line, in a process that dies by SIGKILL on a poisoned upload.

``python -m tests.reliability.crashing_worker worker`` runs ``commands.cli.main(["worker"])`` unchanged, except
that decoding an upload containing ``POISON_MARKER`` kills the process at once (as a segfault in a decoder or the
kernel's OOM killer would): no exception, no result, no acknowledgement. Every other job is served normally, so
the queue's redelivery and delivery limit are exercised against a real crash.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from commands import cli
from service import codec

__all__ = ["POISON_MARKER", "main"]

POISON_MARKER = b"poison: this upload kills the worker that decodes it"

_decode_image = codec.decode_image


def _decode_or_die(data: bytes, max_pixels: int) -> np.ndarray:
    """``codec.decode_image``, or an immediate SIGKILL of this process when ``data`` holds the marker."""
    if POISON_MARKER in data:
        os.kill(os.getpid(), signal.SIGKILL)
    return _decode_image(data, max_pixels)


def main() -> int:
    """Patch the decoder, then run the command line with this process's arguments."""
    codec.decode_image = _decode_or_die  # type: ignore[assignment]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
