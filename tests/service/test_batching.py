"""Batch closing rules with a fake clock and a plain list as the queue (no GPU, no HTTP, no sleeping)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from service.worker.batching import collect_batch, group_by_shape


@dataclass
class FakeJob:
    name: str
    submitted: float
    tiles: int = 1


class FakeQueue:
    """Jobs become visible at their arrival time; a blocking take advances the fake clock instead of sleeping."""

    def __init__(self, arrivals: list[tuple[float, FakeJob]]) -> None:
        self.now = 0.0
        self.arrivals = sorted(arrivals, key=lambda a: a[0])
        self.calls: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    async def take(self, max_jobs: int, block_ms: int) -> list[FakeJob]:
        self.calls.append((max_jobs, block_ms))
        if not self._ready():
            pending = [t for t, _ in self.arrivals]
            limit = self.now + block_ms / 1000.0
            self.now = min([limit, *[t for t in pending if t <= limit]]) if pending else limit
        ready = self._ready()[:max_jobs]
        self.arrivals = [a for a in self.arrivals if a[1] not in ready]
        return ready

    def _ready(self) -> list[FakeJob]:
        return [job for t, job in self.arrivals if t <= self.now]


def collect(queue: FakeQueue, max_batch_size: int = 4, wait_s: float = 0.010, block_ms: int = 250) -> list[str]:
    jobs = asyncio.run(
        collect_batch(
            queue.take,
            cost=lambda j: j.tiles,
            submitted_at=lambda j: j.submitted,
            clock=queue.clock,
            max_batch_size=max_batch_size,
            max_batch_wait_s=wait_s,
            block_ms=block_ms,
        )
    )
    return [j.name for j in jobs]


def test_empty_queue_gives_empty_batch_after_block() -> None:
    queue = FakeQueue([])
    assert collect(queue) == []
    assert queue.now == pytest.approx(0.25)


def test_batch_closes_when_full_without_waiting() -> None:
    queue = FakeQueue([(0.0, FakeJob(f"j{i}", 0.0)) for i in range(6)])
    assert collect(queue) == ["j0", "j1", "j2", "j3"]
    assert queue.now == 0.0
    assert len(queue.calls) == 1


def test_batch_closes_when_oldest_job_waited_max_wait() -> None:
    queue = FakeQueue([(0.0, FakeJob("a", 0.0)), (0.004, FakeJob("b", 0.004)), (0.020, FakeJob("late", 0.020))])
    assert collect(queue) == ["a", "b"]
    assert queue.now == pytest.approx(0.010)


def test_backlogged_job_closes_the_batch_at_once() -> None:
    queue = FakeQueue([(0.0, FakeJob("old", submitted=-1.0)), (0.005, FakeJob("new", 0.005))])
    queue.now = 0.0
    assert collect(queue) == ["old"]


def test_future_submission_time_cannot_extend_the_wait() -> None:
    queue = FakeQueue([(0.0, FakeJob("skewed", submitted=5.0)), (0.5, FakeJob("later", 0.5))])
    assert collect(queue) == ["skewed"]
    assert queue.now == pytest.approx(0.010)


def test_tile_cost_counts_towards_the_size_and_limits_the_next_take() -> None:
    queue = FakeQueue([(0.0, FakeJob("big", 0.0, tiles=3)), (0.001, FakeJob("s1", 0.001)), (0.002, FakeJob("s2", 0))])
    assert collect(queue) == ["big", "s1"]
    assert queue.calls[1][0] == 1  # only one more tile fits


def test_a_job_larger_than_the_batch_is_taken_alone() -> None:
    queue = FakeQueue([(0.0, FakeJob("huge", 0.0, tiles=81)), (0.001, FakeJob("next", 0.0))])
    assert collect(queue) == ["huge"]


def test_group_by_shape_splits_by_shape_and_size_keeping_order() -> None:
    items = [("a", (32, 32)), ("b", (64, 32)), ("c", (32, 32)), ("d", (32, 32)), ("e", (64, 32))]
    groups = group_by_shape(items, lambda i: i[1], max_batch_size=2)
    assert [[name for name, _ in g] for g in groups] == [["a", "c"], ["d"], ["b", "e"]]


@pytest.mark.parametrize("size", [0, -1])
def test_invalid_batch_size_is_rejected(size: int) -> None:
    with pytest.raises(ValueError):
        group_by_shape([1], lambda i: i, size)
