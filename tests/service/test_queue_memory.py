"""The in-process queue: bounds, result delivery, cancellation, length and liveness."""

from __future__ import annotations

import asyncio

import pytest

from service.queue.base import Job, JobQueue, JobResult, QueueFullError, QueueUnavailableError, ResultTimeoutError
from service.queue.memory import MemoryQueue


def test_implements_the_protocol() -> None:
    assert isinstance(MemoryQueue(max_length=1), JobQueue)


def test_submit_take_finish_delivers_the_result() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=4)
        job = Job(payload=b"x")
        await queue.submit(job)
        assert await queue.length() == 1
        waiter = asyncio.create_task(queue.wait_result(job.id, timeout_s=2))
        taken = await queue.take(8, block_ms=10)
        assert [j.id for j in taken] == [job.id] and taken[0].deliveries == 1
        assert await queue.length() == 1  # running jobs still count
        await queue.finish(JobResult(job_id=job.id, width=3))
        assert (await waiter).width == 3
        assert await queue.length() == 0

    asyncio.run(scenario())


def test_result_stored_before_anyone_waits_is_kept() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=4)
        job = Job(payload=b"x")
        await queue.submit(job)
        await queue.take(1, block_ms=0)
        await queue.finish(JobResult.failure(job.id, 422, "bad"))
        result = await queue.wait_result(job.id, timeout_s=0.1)
        assert not result.ok and result.error_status == 422

    asyncio.run(scenario())


def test_full_queue_rejects_before_storing() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=2)
        await queue.submit(Job(payload=b"a"))
        await queue.take(1, block_ms=0)  # running jobs count towards the bound
        await queue.submit(Job(payload=b"b"))
        with pytest.raises(QueueFullError):
            await queue.submit(Job(payload=b"c"))
        assert await queue.length() == 2

    asyncio.run(scenario())


def test_wait_result_times_out() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=2)
        with pytest.raises(ResultTimeoutError):
            await queue.wait_result("nobody", timeout_s=0.05)

    asyncio.run(scenario())


def test_take_blocks_until_a_job_arrives_or_times_out() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=2)
        assert await queue.take(4, block_ms=20) == []
        job = Job(payload=b"x")
        taker = asyncio.create_task(queue.take(4, block_ms=2000))
        await asyncio.sleep(0.01)
        await queue.submit(job)
        assert [j.id for j in await asyncio.wait_for(taker, 1)] == [job.id]

    asyncio.run(scenario())


def test_cancel_waiting_job_is_never_taken_and_running_result_is_dropped() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=4)
        first, second = Job(payload=b"1"), Job(payload=b"2")
        await queue.submit(first)
        await queue.take(1, block_ms=0)
        await queue.submit(second)
        await queue.cancel(second.id)
        assert await queue.take(4, block_ms=0) == []
        await queue.cancel(first.id)  # running: its result is discarded when it comes
        await queue.finish(JobResult(job_id=first.id))
        assert await queue.length() == 0
        with pytest.raises(ResultTimeoutError):
            await queue.wait_result(first.id, timeout_s=0.02)

    asyncio.run(scenario())


def test_workers_alive_counts_recent_heartbeats() -> None:
    now = [100.0]

    async def scenario() -> None:
        queue = MemoryQueue(max_length=1, heartbeat_s=1.0, clock=lambda: now[0])
        await queue.heartbeat("a")
        now[0] += 2.0
        await queue.heartbeat("b")
        assert await queue.workers_alive() == 2
        now[0] += 2.0  # a: 4 s old (> 3 intervals), b: 2 s old
        assert await queue.workers_alive() == 1

    asyncio.run(scenario())


def test_close_fails_waiting_requests() -> None:
    async def scenario() -> None:
        queue = MemoryQueue(max_length=1)
        waiter = asyncio.create_task(queue.wait_result("j", timeout_s=5))
        await asyncio.sleep(0)
        await queue.close()
        with pytest.raises(QueueUnavailableError):
            await waiter
        assert not await queue.ping()

    asyncio.run(scenario())
