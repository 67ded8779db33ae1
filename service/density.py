"""The haze-density score (FADE, Choi et al. 2015) computed off the inference path.

FADE is pure NumPy/SciPy work that holds the GIL for a long time, so it runs in a small process pool
(``settings.density_workers`` processes) and the event loop awaits it with ``run_in_executor``; the model
worker never waits for it.

Size bound: FADE is a statistic over non-overlapping 8×8 patches (their contrast, entropy, saturation, dark channel,
...) compared with fog-free and foggy reference models, and its cost grows linearly with the number of patches
(measured at about 0.5 s per megapixel on one CPU core of the dev machine; ``tests/service/test_density.py`` prints
it). Images above ``MAX_FADE_PIXELS`` (1 MP) are therefore shrunk, keeping the aspect ratio, with an area (box)
filter before scoring. That bounds the cost of one score to about a second for any accepted upload. The price: on a
shrunk image each 8×8 patch covers more of the scene, so the score of a 12 MP photo is the score of its 1 MP
version, not of the full-resolution pixels; scores of images of very different sizes compare loosely, scores before
and after dehazing of one image (same size) compare exactly as FADE intends.

The bound holds for every aspect ratio: FADE needs 16 pixels on each side, so a side shorter than that is padded,
and what is bounded is the *padded* size (``fade_size``). A 1×1,000,000 image has only a megapixel but would be
scored at 16 megapixels (23 s and 5.3 GB measured); it is shrunk along its long side until the padded image fits
(16×65,536 here). ``fade_of_array`` applies the same bound itself, so no caller can score more than
``max(max_pixels, 256)`` pixels.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from service import codec
from service.metrics import observe_density

__all__ = ["MAX_FADE_PIXELS", "DensityScorer", "fade_of_array", "fade_of_bytes", "fade_size", "shrink_for_fade"]

logger = logging.getLogger(__name__)

MAX_FADE_PIXELS = 1 << 20
"""Images with more pixels than this are shrunk (area filter, aspect kept) before FADE."""

_MIN_SIDE = 16  # pyfade fails below two 8×8 patches per side (a border filter needs them)


def fade_size(width: int, height: int, max_pixels: int = MAX_FADE_PIXELS) -> tuple[int, int]:
    """The size an image is scored at: its own, or smaller so that, padded to 16 px a side, it fits ``max_pixels``.

    The aspect ratio is kept while both sides stay at least 16 px; a side that would fall below that is padded
    anyway, so the other side alone is shrunk to fit. The padded result never exceeds ``max(max_pixels, 256)``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"empty image size {width}x{height}")
    limit = max(max_pixels, _MIN_SIDE * _MIN_SIDE)
    if max(width, _MIN_SIDE) * max(height, _MIN_SIDE) <= limit:
        return width, height
    scale = math.sqrt(limit / (width * height))
    new_w, new_h = min(width, max(1, int(width * scale))), min(height, max(1, int(height * scale)))
    if new_w < _MIN_SIDE:  # padded to 16 wide: the height takes what is left
        new_w, new_h = min(width, _MIN_SIDE), min(height, limit // _MIN_SIDE)
    elif new_h < _MIN_SIDE:
        new_w, new_h = min(width, limit // _MIN_SIDE), min(height, _MIN_SIDE)
    return new_w, new_h


def shrink_for_fade(image: Image.Image, max_pixels: int = MAX_FADE_PIXELS) -> Image.Image:
    """The image itself when it fits ``fade_size``, else a box-filtered copy of that size."""
    size = fade_size(*image.size, max_pixels)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BOX)


def fade_of_array(rgb: np.ndarray, max_pixels: int = MAX_FADE_PIXELS) -> float:
    """FADE of an H×W×3 uint8 RGB array (lower = less haze).

    An array larger than ``fade_size`` allows is shrunk first (box filter); sides under 16 pixels are then padded
    by edge copy.
    """
    import pyfade  # imported in the pool's processes only; loads its reference models on first use

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    if fade_size(width, height, max_pixels) != (width, height):
        rgb = np.asarray(shrink_for_fade(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), max_pixels))
    pad_h, pad_w = max(0, _MIN_SIDE - rgb.shape[0]), max(0, _MIN_SIDE - rgb.shape[1])
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return float(pyfade.fade_array(rgb))


def fade_of_bytes(data: bytes, max_pixels: int = MAX_FADE_PIXELS) -> float:
    """FADE of an encoded image (EXIF orientation applied, shrunk to ``max_pixels``).

    The caller has already checked the header and the pixel limit; this runs in a pool process.

    Raises:
        ValueError: when the bytes do not decode as an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (int(math.sqrt(max_pixels)) * 2,) * 2)  # JPEG only: decode at a reduced scale
            image = _to_rgb8(ImageOps.exif_transpose(opened))
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode the image: {error}") from error
    return fade_of_array(np.asarray(shrink_for_fade(image, max_pixels)), max_pixels)


def _to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB for FADE, with the worker's scaling of 16/32-bit integer and float images.

    Pillow's own conversion clips such images to plain white or black, whose FADE is undefined; ``codec.to_rgb01``
    scales them as the worker does (and refuses NaN with a ValueError, which /density answers with 422), and
    ``codec.to_uint8`` rounds them as the encoder does.
    """
    if image.mode == "F" or image.mode.startswith("I"):
        return Image.fromarray(codec.to_uint8(codec.to_rgb01(image)))
    return image.convert("RGB")


_POOL_NICENESS = 19  # os.nice increment of the FADE processes, where SCHED_IDLE is not available


def _init_pool_process() -> None:
    """Pool processes leave Ctrl-C to the parent, which shuts the pool down in order, and yield the CPU.

    FADE is best-effort work beside the model: on a machine without spare cores its process takes CPU from torch's
    threads, and one slowed thread stalls the whole team at the next barrier. tests/benchmarks/bench_fade.py on
    2 cores, inference images/s with a FADE process kept busy / without: 0.56 at normal priority, 0.81-0.84 at
    nice 10, 0.78-0.95 at nice 19, 0.91-0.98 under Linux's ``SCHED_IDLE``, which runs FADE only when a core would
    otherwise idle (it still completed 0.75-0.9 one-megapixel scores/s there, so JSON answers do not starve). On a
    machine with spare cores, or a GPU worker, nothing changes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # e.g. a seccomp profile that forbids it: scores still work
        os.nice(_POOL_NICENESS)
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class DensityScorer:
    """A process pool computing FADE scores for the event loop; one per app, opened and closed by the lifespan."""

    def __init__(self, workers: int, max_pixels: int = MAX_FADE_PIXELS) -> None:
        """Start ``workers`` processes (spawned: forking a process that runs torch threads is unsafe)."""
        if workers < 1:
            raise ValueError("density workers must be at least 1")
        self._max_pixels = max_pixels
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_pool_process
        )
        self.warmed = False

    async def warm_up(self) -> None:
        """Start the pool's processes and load FADE's reference models, so the first request is not slow.

        ``warmed`` is set when this ends, also when it fails (logged): /readyz waits for it, and a pool that cannot
        score answers each density request with its own error instead of keeping the whole service unready.
        """
        started = time.perf_counter()
        try:
            await self.score_array(np.full((16, 16, 3), 128, dtype=np.uint8))
            logger.info("density pool ready in %.2f s", time.perf_counter() - started)
        except Exception:
            logger.exception("the density pool failed its warm-up")
        finally:
            self.warmed = True

    async def score_bytes(self, data: bytes) -> float:
        """FADE of an encoded image, computed in the pool."""
        return await self._run(fade_of_bytes, data, self._max_pixels)

    async def score_array(self, rgb: np.ndarray) -> float:
        """FADE of an H×W×3 uint8 array, computed in the pool (shrunk first when it is too large)."""
        height, width = rgb.shape[:2]
        if fade_size(width, height, self._max_pixels) != (width, height):
            rgb = np.asarray(shrink_for_fade(Image.fromarray(rgb), self._max_pixels))
        return await self._run(fade_of_array, rgb, self._max_pixels)

    async def _run(self, function: Callable[..., float], *args: object) -> float:
        started = time.perf_counter()
        score = await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        observe_density(time.perf_counter() - started)
        return float(score)

    def close(self) -> None:
        """Stop the pool's processes (pending scores are cancelled)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
