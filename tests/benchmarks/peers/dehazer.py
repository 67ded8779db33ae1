"""The model side every peer server shares: PNG uploads in, PNG images out, computed as our worker computes them.

Fairness rests here. Every peer uses the service's own pieces for everything that is not serving: the codec
(``decode_image``; ``encode_image`` with the service's PNG settings), the worker's plan (mirror padding to the
bucket multiple, 640-px tiles, blending) and ``Runner`` (the artifact under ``inference_mode``), with the same
torch thread count, the same glibc malloc settings and oneDNN kernel cache (``tune_for_inference`` and
``size_kernel_cache``, as the ``dehaze`` command applies them) and the same warm-up shapes as our worker. What
differs between servers is only how requests reach the model and how answers go back. Like ours, each answer
carries a ``Server-Timing`` header with the model's ``compute`` time, so the benchmark can tell model time from
serving time.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from commands.allocator import tune_for_inference
from model.kernel_cache import size_kernel_cache
from service.codec import decode_image, encode_image
from service.config import Settings
from service.worker.batching import group_by_shape
from service.worker.plan import ImagePlan
from service.worker.runner import Runner
from service.worker.warm_up import warm_up

__all__ = ["Dehazer", "peer_arguments", "start_process"]

logger = logging.getLogger(__name__)


class Dehazer:
    """The artifact loaded once; :meth:`dehaze` turns a list of PNG uploads into a list of PNG answers.

    Args:
        artifact: the TorchScript artifact (``model.export``), the one our service loads.
        threads: torch intra-op threads, set here (call from the process, and thread, that runs the model).
        max_batch_size: the most same-shape pieces in one forward (the service's ``max_batch_size``).
    """

    def __init__(self, artifact: Path, threads: int, max_batch_size: int = 1) -> None:
        torch.set_num_threads(threads)
        self.settings = Settings()
        self.max_batch_size = max(1, max_batch_size)
        self.runner = Runner.from_artifact(artifact, device="cpu")  # in the precision the artifact records

    def warm_up(self) -> None:
        """The worker's warm-up, at the same shapes (``service.worker.warm_up``)."""
        warm_up(self.runner, self.settings)

    def dehaze(self, payloads: Sequence[bytes]) -> tuple[list[bytes], dict[str, float]]:
        """PNG of the dehazed image for each upload, and the call's ``decode``, ``compute`` and ``encode`` times
        (milliseconds, as our worker reports them); same-shape pieces of all uploads share forwards.

        Raises:
            Exception: the codec's errors for a bad upload, or the first forward error (a benchmark has none).
        """
        t0 = time.perf_counter()
        images = [decode_image(payload, self.settings.max_pixels) for payload in payloads]
        cfg = self.settings
        plans = [ImagePlan(image, cfg.tile_size, cfg.tile_overlap, cfg.bucket_multiple) for image in images]
        pieces = [(plan, piece) for plan in plans for piece in plan.pieces]
        timings = {"decode": 1000.0 * (time.perf_counter() - t0), "compute": 0.0}
        for group in group_by_shape(pieces, lambda pair: pair[1].shape, self.max_batch_size):
            items = [piece.pixels(plan.image) for plan, piece in group]
            t1 = time.perf_counter()
            outputs = self.runner.run_items(items)
            timings["compute"] += 1000.0 * (time.perf_counter() - t1)
            for (plan, piece), output in zip(group, outputs, strict=True):
                if isinstance(output, Exception):
                    raise output
                plan.add(piece, *output)
        t2 = time.perf_counter()
        pngs = [encode_image(plan.outputs()[0], "png") for plan in plans]
        timings["encode"] = 1000.0 * (time.perf_counter() - t2)
        return pngs, timings


def peer_arguments(description: str) -> argparse.ArgumentParser:
    """The options every peer program takes (the benchmark passes them all)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--artifact", type=Path, required=True, help="TorchScript artifact to serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the process running the model")
    parser.add_argument("--max-batch-size", type=int, default=1, help="1: no batching")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits for more requests")
    return parser


def start_process() -> None:
    """Process set-up before any thread exists: warnings-level logging, and the ``dehaze`` command's malloc tuning
    and oneDNN kernel cache."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tune_for_inference()
    size_kernel_cache()
