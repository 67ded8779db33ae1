"""The authors' evaluation protocol in a process of its own: eager pipeline, one image at a time, fp32, default malloc.

Our ``dehaze`` processes tune glibc's malloc (``commands.allocator``); that is part of our pipeline, not of the
authors' script, and ``mallopt`` settings cannot be undone inside a process (the heap a tuned mode leaves behind
would speed up a baseline run after it). So the baseline runs in a spawned child that never tunes malloc, with the
same weights and thread count, and the parent sends it each round's images: rounds still alternate with the other
modes side by side. The child times its own forwards, so the pipe transfer is not counted against it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from service.worker.runner import from_tensor, to_tensor
from tests.benchmarks.common import load_pipeline, sync

__all__ = ["BaselineProcess", "eager_one_at_a_time"]

Images = list[np.ndarray]


def eager_one_at_a_time(pipeline: torch.nn.Module, images: Images, device: torch.device) -> Images:
    """The authors' protocol (DCMPNET.md §4): eager, batch 1, fp32, under ``no_grad``; host arrays in and out."""
    outputs = []
    with torch.no_grad():
        for image in images:
            dehazed, _ = pipeline(to_tensor(image).to(device))
            outputs.append(from_tensor(dehazed)[0])
    return outputs


def _serve(conn: Connection, weights: str, variant: str | None, threads: int, device_type: str) -> None:
    """Child process: load the pipeline, then answer each list of images with (outputs, seconds) until None."""
    torch.set_num_threads(threads)
    device = torch.device(device_type)
    torch.manual_seed(0)  # random-initialised variants get the same weights as in the parent
    pipeline, _ = load_pipeline(Path(weights), variant)
    pipeline = pipeline.to(device).eval()
    conn.send("ready")
    while (images := conn.recv()) is not None:
        sync(device)
        started = time.perf_counter()
        outputs = eager_one_at_a_time(pipeline, images, device)
        sync(device)
        conn.send((outputs, time.perf_counter() - started))


class BaselineProcess:
    """A spawned child running :func:`eager_one_at_a_time`; call it with images, read ``last_seconds``.

    Args:
        weights, variant: as ``common.load_pipeline`` (the parent seeds torch with 0 before its own load too).
        threads: torch CPU threads of the child (the parent's count, for a fair comparison).
        device: where the child runs the pipeline.
    """

    def __init__(self, weights: Path, variant: str | None, threads: int, device: torch.device) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child_conn, str(weights), variant, threads, device.type), daemon=True
        )
        self._process.start()
        child_conn.close()
        if self._conn.recv() != "ready":
            raise RuntimeError("baseline process failed to start")
        self.last_seconds = 0.0

    def __call__(self, images: Images) -> Images:
        """The child's outputs for ``images``; its own forward time is left in ``last_seconds``."""
        self._conn.send(images)
        outputs, self.last_seconds = self._conn.recv()
        return outputs

    def close(self) -> None:
        """Stop the child."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()
