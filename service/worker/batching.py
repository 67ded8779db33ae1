"""Dynamic batching, as pure logic: when a batch closes, and how its work items are grouped into forwards.

Nothing here knows about Redis, HTTP, images or torch. ``collect_batch`` takes jobs through any ``take``
callable and reads time from an injected clock, so it is tested with a fake clock and a plain list.

A batch closes when it holds ``max_batch_size`` tiles (a job's cost is its number of tiles) or when its oldest job
has waited ``max_batch_wait_s``. The wait is counted from the earlier of the job's submission time and the moment
this worker first saw the job (so a backlog is served at once, and clock skew between machines cannot make a worker
wait longer than ``max_batch_wait_s``). A job is never split across batches: a large image may bring more tiles
than ``max_batch_size``; ``group_by_shape`` then cuts its tiles into several forwards of at most that many.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TypeVar

__all__ = ["collect_batch", "group_by_shape"]

J = TypeVar("J")
T = TypeVar("T")


async def collect_batch(
    take: Callable[[int, int], Awaitable[list[J]]],
    *,
    cost: Callable[[J], int],
    submitted_at: Callable[[J], float],
    clock: Callable[[], float],
    max_batch_size: int,
    max_batch_wait_s: float,
    block_ms: int,
) -> list[J]:
    """Take jobs until the batch is full (by tile cost) or its oldest job has waited long enough.

    Args:
        take: ``take(max_jobs, block_ms)`` returning up to ``max_jobs`` jobs, waiting at most ``block_ms``.
        cost: the number of tiles a job brings (at least 1 is assumed).
        submitted_at: a job's submission time on ``clock``'s scale.
        clock: current time in seconds (``time.time`` in production, a fake in tests).
        max_batch_size: tiles at which the batch closes.
        max_batch_wait_s: how long the oldest job may wait for peers.
        block_ms: how long to wait for the first job; ``[]`` comes back when none arrives.

    Returns:
        The jobs of one batch, in arrival order (possibly empty).
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    jobs = list(await take(max_batch_size, block_ms))
    if not jobs:
        return jobs
    first_seen = clock()
    closes_at = min([first_seen, *(submitted_at(job) for job in jobs)]) + max_batch_wait_s
    tiles = sum(max(1, cost(job)) for job in jobs)
    while tiles < max_batch_size:
        remaining_s = closes_at - clock()
        if remaining_s <= 0:
            break
        more = await take(max_batch_size - tiles, max(1, math.ceil(remaining_s * 1000.0)))
        jobs.extend(more)
        tiles += sum(max(1, cost(job)) for job in more)
    return jobs


def group_by_shape(items: Sequence[T], shape: Callable[[T], Hashable], max_batch_size: int) -> list[list[T]]:
    """Split work items into forwards: same shape within a forward, at most ``max_batch_size`` items each.

    Groups come in the order their shape first appears; items keep their order within a group, so the tiles of
    one job stay together and a job finishes as early as possible.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(shape(item), []).append(item)
    return [group[i : i + max_batch_size] for group in groups.values() for i in range(0, len(group), max_batch_size)]
