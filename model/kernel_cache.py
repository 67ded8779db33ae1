"""oneDNN's primitive cache, sized so that a CPU worker keeps the kernels of every input shape it has met.

On the CPU, torch runs each convolution through a oneDNN *primitive*: a kernel generated (JIT) for one exact
configuration, input shape and batch size included. oneDNN keeps the primitives it made in a least-recently-used
cache of 1,024 entries by default. One forward of the shipped ``dcmpnet_small`` makes 94 of them (traced, bfloat16;
the paper-size network about 170), so the default cache holds the kernels of about ten padded input shapes. A
service that meets more shapes than that (every 32-px bucket up to 640 px is a shape: 400 of them) keeps evicting
and regenerating kernels, and a request at a shape it has served before pays the first-request cost again.
Measured on a 2-vCPU Xeon (AMX), 60 shapes up to 320 px served again after all the others: 1.96× faster with
this module's cache than with the default in bfloat16, 1.32× in float32 (``docs/benchmarks.md``, section 8).

The price is memory, paid only for shapes actually met: in bfloat16 5-7 MiB per shape up to 320 px and about 9 MiB
per shape of 352-640 px (64 of those took 0.56 GiB more than with the default cache), 1-2 MiB in float32, for the
small model (``tests/benchmarks/bench_kernel_cache.py``, ``docs/benchmarks.md``). ``DEHAZE_KERNEL_CACHE_SHAPES``
(default 64) sets how many shapes' kernels stay; the capacity is that times :data:`PRIMITIVES_PER_SHAPE`. ``0``
keeps oneDNN's default, and an ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` set by the operator always wins.

oneDNN reads its variable when it first creates a primitive, so this runs at the start of every ``dehaze``
command (``commands.cli.main``), before any forward pass; torch exposes no call to change it later.
"""

from __future__ import annotations

import logging
import os

from pydantic import NonNegativeInt, TypeAdapter, ValidationError

__all__ = [
    "DEFAULT_SHAPES",
    "ENV_SHAPES",
    "ONEDNN_DEFAULT_CAPACITY",
    "ONEDNN_ENV",
    "PRIMITIVES_PER_SHAPE",
    "shapes_kept",
    "size_kernel_cache",
]

logger = logging.getLogger(__name__)

ENV_SHAPES = "DEHAZE_KERNEL_CACHE_SHAPES"
ONEDNN_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
DEFAULT_SHAPES = 64
PRIMITIVES_PER_SHAPE = 192  # above what one forward of any of our networks creates (94-169 measured)
ONEDNN_DEFAULT_CAPACITY = 1024


def size_kernel_cache() -> int | None:
    """Set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` from ``DEHAZE_KERNEL_CACHE_SHAPES`` unless the operator set it.

    Returns:
        The capacity set, or None when it was left alone (set already, or 0 shapes asked for).
    """
    if os.environ.get(ONEDNN_ENV):
        logger.debug("%s=%s set by the environment: kept", ONEDNN_ENV, os.environ[ONEDNN_ENV])
        return None
    raw = os.environ.get(ENV_SHAPES, str(DEFAULT_SHAPES)).strip()
    try:  # parsed as the service's settings parse it (``Settings.kernel_cache_shapes``), which reject a bad value
        shapes = TypeAdapter(NonNegativeInt).validate_python(raw)
    except ValidationError:
        shapes = DEFAULT_SHAPES
    if shapes == 0:
        return None
    capacity = shapes * PRIMITIVES_PER_SHAPE
    os.environ[ONEDNN_ENV] = str(capacity)
    logger.debug("oneDNN primitive cache: %d entries (%d shapes)", capacity, shapes)
    return capacity


def capacity_in_force() -> int:
    """The primitive cache capacity oneDNN uses in this process: its variable's value, else its default."""
    raw = os.environ.get(ONEDNN_ENV, "").strip()
    try:
        return int(raw) if raw else ONEDNN_DEFAULT_CAPACITY
    except ValueError:
        return ONEDNN_DEFAULT_CAPACITY


def shapes_kept() -> int:
    """How many input shapes' kernels the cache in force keeps at least (capacity over :data:`PRIMITIVES_PER_SHAPE`).

    Read from ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` as :func:`size_kernel_cache` or the operator left it, so an
    operator's own value counts; a process where neither set it has oneDNN's default.
    """
    return capacity_in_force() // PRIMITIVES_PER_SHAPE
