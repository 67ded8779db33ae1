"""The padded input shapes a worker computes once before it reports ready, so that no request pays for them.

The first forward pass at a new input shape costs more than the next ones: on the CPU oneDNN generates the
kernels of every convolution for that shape (94 for the traced ``dcmpnet_small``), which made the first request of
a 448×608 padded shape 23-25% slower than a steady one in bfloat16 on a Xeon with AMX (3-4% in float32). Each padded
shape pays it once per process while its kernels stay cached (``model.kernel_cache``).

Always warmed: the smallest bucket and the tile (every image larger than the tile on both sides is cut into tiles
of that shape). ``warm_up_sizes`` adds the padded shapes of the image sizes clients are expected to send (default
640×480 and 480×640, VGA photos and the SOTS images in either orientation), or ``all`` of them: every bucket up to
the tile on each side, (tile / bucket)² shapes (400 at the defaults): 144 s and 5.7 GiB of RSS
for the bfloat16 small model on a 2-vCPU Xeon, with ``kernel_cache_shapes`` raised to 400 to keep them.
"""

from __future__ import annotations

import logging
import time

from model import kernel_cache
from service.config import Settings
from service.worker.runner import Runner
from service.worker.tiling import bucket_shape, plan_tiles

__all__ = ["padded_shape", "parse_sizes", "warm_up", "warm_up_shapes"]

logger = logging.getLogger(__name__)


def parse_sizes(sizes: str) -> list[tuple[int, int]]:
    """``"640x480,480x640"`` as ``[(640, 480), (480, 640)]``: (width, height) pairs, validated by ``Settings``."""
    pairs = [item.strip().lower().split("x") for item in sizes.split(",") if item.strip()]
    return [(int(width), int(height)) for width, height in pairs]


def padded_shape(height: int, width: int, settings: Settings) -> tuple[int, int]:
    """The (height, width) every piece of an image of this size is computed at (``service.worker.plan``)."""
    tile = plan_tiles(height, width, settings.tile_size, settings.tile_overlap)[0]
    return bucket_shape(tile.h, tile.w, settings.bucket_multiple)


def warm_up_shapes(settings: Settings) -> list[tuple[int, int]]:
    """The shapes to warm, each once, in order: the smallest bucket, the tile, then ``warm_up_sizes``'s."""
    small, tile = settings.bucket_multiple, settings.tile_size
    shapes = [(small, small), (tile, tile)]
    if settings.warm_up_sizes == "all":
        extra = [(h, w) for h in range(small, tile + 1, small) for w in range(small, tile + 1, small)]
    else:
        extra = [padded_shape(height, width, settings) for width, height in parse_sizes(settings.warm_up_sizes)]
    for shape in extra:
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def warm_up(runner: Runner, settings: Settings) -> None:
    """Compute every :func:`warm_up_shapes` shape: the first two twice, as TorchScript's profiling executor
    specialises the graph in its first runs, every other one once (its kernels are what it costs)."""
    shapes = warm_up_shapes(settings)
    kept = kernel_cache.shapes_kept()
    if runner.device.type == "cpu" and kept < len(shapes):
        logger.warning(
            "warming %d shapes, but oneDNN's kernel cache (%s=%d) keeps as few as %d shapes' kernels: the first "
            "ones may be evicted again (raise DEHAZE_KERNEL_CACHE_SHAPES)",
            len(shapes),
            kernel_cache.ONEDNN_ENV,
            kernel_cache.capacity_in_force(),
            kept,
        )
    t0 = time.perf_counter()
    runner.warm_up(shapes[:2], runs=2)
    runner.warm_up(shapes[2:], runs=1)
    listed = shapes if len(shapes) <= 8 else f"{shapes[:8]} ..."
    logger.info("warm-up of %d shapes took %.0f ms: %s", len(shapes), 1000.0 * (time.perf_counter() - t0), listed)
