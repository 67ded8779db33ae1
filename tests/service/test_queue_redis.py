"""The Redis Streams queue against a real redis-server (tests/conftest.py starts a private one)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from service.config import Settings
from service.queue.base import (
    Job,
    JobQueue,
    JobResult,
    OutputSpec,
    QueueFullError,
    QueueUnavailableError,
    ResultTimeoutError,
)
from service.queue.factory import make_queue
from service.queue.memory import MemoryQueue
from service.queue.redis_streams import CONSUMER_GROUP, RedisStreamsQueue, decode_result, encode_result, stream_key

pytestmark = pytest.mark.redis


def make(url: str, **overrides: Any) -> RedisStreamsQueue:
    options: dict[str, Any] = {"max_length": 8, "result_ttl_s": 60, "claim_idle_ms": 100, "heartbeat_s": 0.3}
    return RedisStreamsQueue(url, **{**options, **overrides})


def test_result_blob_round_trip() -> None:
    result = JobResult(job_id="j", image=b"\x89PNG...", image_media_type="image/png", depth=b"", width=3, height=2)
    result.timings_ms["compute"] = 1.5
    assert decode_result(encode_result(result)) == result
    assert decode_result(encode_result(JobResult.failure("k", 422, "bad"))) == JobResult.failure("k", 422, "bad")


def test_factory_picks_the_backend(redis_url: str) -> None:
    assert isinstance(make_queue(Settings()), MemoryQueue)
    queue = make_queue(Settings(redis_url=redis_url))
    assert isinstance(queue, RedisStreamsQueue) and isinstance(queue, JobQueue)
    asyncio.run(queue.close())


def test_submit_take_finish_wait(redis_url: str) -> None:
    async def scenario() -> None:
        api, worker = make(redis_url), make(redis_url)
        spec = OutputSpec(format="webp", quality=75, want_depth=True)
        job = Job(payload=b"\x00\xffbytes", output=spec, deadline=1e12, width=700, height=300, tiles=2)
        await api.submit(job)
        assert await api.length() == 1
        (taken,) = await worker.take(4, block_ms=100)
        assert (taken.id, taken.payload, taken.output, taken.deliveries) == (job.id, job.payload, spec, 1)
        assert taken.enqueued_at == job.enqueued_at and taken.deadline == 1e12
        assert (taken.width, taken.height, taken.tiles) == (700, 300, 2)
        assert await api.length() == 1  # in progress still counts
        await worker.finish(JobResult(job_id=job.id, image=b"out", depth=b"d", width=5))
        result = await api.wait_result(job.id, timeout_s=2)
        assert (result.image, result.depth, result.width) == (b"out", b"d", 5)
        assert await api.length() == 0  # XACK + XDEL
        client = redis.Redis.from_url(redis_url)
        assert client.xlen("dehaze:jobs") == 0 and client.xpending("dehaze:jobs", "workers")["pending"] == 0
        assert not client.exists(f"dehaze:payload:{job.id}") and not client.exists(f"dehaze:result:{job.id}")
        await api.close()
        await worker.close()

    asyncio.run(scenario())


def test_full_queue_rejects_before_storing_even_across_replicas(redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        replicas = [make(redis_url, max_length=5) for _ in range(4)]
        jobs = [Job(payload=b"x" * 100) for _ in range(12)]
        outcomes = await asyncio.gather(
            *(replicas[i % 4].submit(job) for i, job in enumerate(jobs)), return_exceptions=True
        )
        assert all(o is None or isinstance(o, QueueFullError) for o in outcomes)
        length = await replicas[0].length()
        for replica in replicas:
            await replica.close()
        return sum(o is None for o in outcomes), length

    accepted, length = asyncio.run(scenario())
    assert accepted == 5 and length == 5
    assert len(redis.Redis.from_url(redis_url).keys("dehaze:payload:*")) == 5


def test_wait_result_times_out(redis_url: str) -> None:
    async def scenario() -> None:
        queue = make(redis_url)
        with pytest.raises(ResultTimeoutError):
            await queue.wait_result("nobody", timeout_s=0.1)
        await queue.close()

    asyncio.run(scenario())


def test_cancelled_job_is_skipped_and_removed(redis_url: str) -> None:
    async def scenario() -> None:
        api, worker = make(redis_url), make(redis_url)
        cancelled, kept = Job(payload=b"1"), Job(payload=b"2")
        await api.submit(cancelled)
        await api.submit(kept)
        await api.cancel(cancelled.id)
        assert [j.id for j in await worker.take(4, block_ms=100)] == [kept.id]
        assert await api.length() == 1
        await worker.finish(JobResult(job_id=kept.id))
        await api.cancel(kept.id)  # a late cancel drops the stored result
        with pytest.raises(ResultTimeoutError):
            await api.wait_result(kept.id, 0.1)
        await api.close()
        await worker.close()

    asyncio.run(scenario())


def test_running_job_cancelled_keeps_no_result(redis_url: str) -> None:
    async def scenario() -> None:
        api, worker = make(redis_url), make(redis_url)
        job = Job(payload=b"1")
        await api.submit(job)
        await worker.take(1, block_ms=100)
        await api.cancel(job.id)
        await worker.finish(JobResult(job_id=job.id))
        assert not redis.Redis.from_url(redis_url).exists(f"dehaze:result:{job.id}")
        assert await api.length() == 0
        await api.close()
        await worker.close()

    asyncio.run(scenario())


def test_heartbeats_expire(redis_url: str) -> None:
    async def scenario() -> None:
        queue = make(redis_url, heartbeat_s=0.3)  # key lives ceil(0.9) = 1 s
        await queue.heartbeat("w1")
        await queue.heartbeat("w2")
        assert await queue.workers_alive() == 2
        await asyncio.sleep(1.2)
        await queue.heartbeat("w2")
        assert await queue.workers_alive() == 1
        await queue.close()

    asyncio.run(scenario())


def test_reclaim_from_a_dead_consumer_counts_deliveries(redis_url: str) -> None:
    async def scenario() -> None:
        api, dead, alive = make(redis_url), make(redis_url), make(redis_url)
        job = Job(payload=b"p")
        await api.submit(job)
        assert await alive.ping()  # connect now: a first connection on a loaded machine can outlast claim_idle_ms
        assert len(await dead.take(1, block_ms=100)) == 1  # ... and the consumer never finishes
        assert await alive.take(1, block_ms=10) == []  # not idle long enough yet
        await asyncio.sleep(0.15)
        alive._last_claim = float("-inf")  # do not wait for the periodic claim
        (reclaimed,) = await alive.take(1, block_ms=10)
        assert reclaimed.id == job.id and reclaimed.deliveries == 2 and reclaimed.payload == b"p"
        await alive.finish(JobResult(job_id=job.id))
        assert (await api.wait_result(job.id, 1)).ok
        for queue in (api, dead, alive):
            await queue.close()

    asyncio.run(scenario())


def test_heartbeat_keeps_a_slow_workers_jobs(redis_url: str) -> None:
    async def scenario() -> None:
        api, slow, other = make(redis_url), make(redis_url), make(redis_url)
        await api.submit(Job(payload=b"p"))
        await slow.take(1, block_ms=100)
        for _ in range(3):
            await asyncio.sleep(0.06)
            await slow.heartbeat("slow")  # refreshes the idle time of the job in hand
            other._last_claim = float("-inf")
            assert await other.take(1, block_ms=1) == []
        for queue in (api, slow, other):
            await queue.close()

    asyncio.run(scenario())


def test_poisoned_job_fails_after_the_delivery_limit(redis_url: str) -> None:
    async def scenario() -> None:
        api = make(redis_url, delivery_limit=2)
        job = Job(payload=b"crashes every worker")
        await api.submit(job)
        consumers = [make(redis_url, delivery_limit=2) for _ in range(3)]
        poisoned: list[str] = []
        assert len(await consumers[0].take(1, block_ms=100, on_poisoned=lambda j: poisoned.append(j.id))) == 1
        await asyncio.sleep(0.15)
        consumers[1]._last_claim = float("-inf")
        assert [j.deliveries for j in await consumers[1].take(1, block_ms=10)] == [2]
        await asyncio.sleep(0.15)
        consumers[2]._last_claim = float("-inf")
        assert poisoned == []
        assert await consumers[2].take(1, block_ms=10, on_poisoned=lambda j: poisoned.append(j.id)) == []
        result = await api.wait_result(job.id, 1)
        assert not result.ok and result.error_status == 500 and result.error == "job failed 2 times; giving up"
        assert poisoned == [job.id] and await api.length() == 0
        for queue in (api, *consumers):
            await queue.close()

    asyncio.run(scenario())


def add_entry(url: str, job_id: str, options: bytes, **extra: bytes) -> None:
    """A stream entry and its payload written directly, as another version of the service might have."""
    client = redis.Redis.from_url(url)
    client.set(f"dehaze:payload:{job_id}", b"p", ex=60)
    fields = {b"id": job_id.encode(), b"enqueued_at": b"1.5", b"deadline": b"1e12", b"options": options, **extra}
    client.xadd(stream_key("dehaze"), fields)
    client.close()


def test_an_unreadable_entry_is_answered_and_poisoned_at_once(redis_url: str) -> None:
    async def scenario() -> None:
        api, worker = make(redis_url), make(redis_url)
        await worker.take(1, block_ms=0)  # creates the consumer group
        add_entry(redis_url, "odd", b'{"format": "png", "sepia": true}')
        poisoned: list[str] = []
        assert await worker.take(4, block_ms=100, on_poisoned=lambda j: poisoned.append(j.id)) == []
        result = await api.wait_result("odd", 1)
        assert not result.ok and result.error_status == 500
        assert result.error == "the job cannot be read: unknown output spec keys ['sepia']"
        assert poisoned == ["odd"] and await api.length() == 0
        await api.close()
        await worker.close()

    asyncio.run(scenario())


def test_an_entry_of_the_previous_format_is_read(redis_url: str) -> None:
    """Entries written before the output spec and the tile count: options without quality, no ``tiles`` field."""

    async def scenario() -> Job:
        worker = make(redis_url)
        await worker.take(1, block_ms=0)
        options = b'{"format": "png", "want_image": false, "want_depth": true, "depth_colormap": true}'
        add_entry(redis_url, "old", options, width=b"40", height=b"30")
        (job,) = await worker.take(1, block_ms=100)
        await worker.close()
        return job

    job = asyncio.run(scenario())
    assert job.output == OutputSpec(want_image=False, want_depth=True, depth_colormap=True)
    assert (job.id, job.payload, job.enqueued_at, job.width, job.height, job.tiles) == ("old", b"p", 1.5, 40, 30, 0)


def test_unavailable_then_reconnects_and_recreates_the_group(redis_server: Any, redis_url: str) -> None:
    async def scenario() -> None:
        api, worker = make(redis_url), make(redis_url)
        await api.submit(Job(payload=b"before"))
        assert len(await worker.take(1, block_ms=100)) == 1
        redis_server.stop()
        assert not await api.ping()
        with pytest.raises(QueueUnavailableError):
            await api.submit(Job(payload=b"down"))
        with pytest.raises(QueueUnavailableError):
            await worker.take(1, block_ms=10)
        with pytest.raises(QueueUnavailableError):
            await api.wait_result("x", 0.1)
        redis_server.start()  # empty: the stream and the consumer group are gone
        assert await api.ping()
        worker._last_claim = float("-inf")
        assert await worker.take(1, block_ms=10) == []  # NOGROUP -> the worker re-creates the group
        assert redis.Redis.from_url(redis_url).xinfo_groups("dehaze:jobs")[0]["name"] == b"workers"
        job = Job(payload=b"after")
        await api.submit(job)
        (taken,) = await worker.take(1, block_ms=100)
        assert taken.id == job.id
        await worker.finish(JobResult(job_id=job.id))
        assert (await api.wait_result(job.id, 1)).ok
        await api.close()
        await worker.close()

    asyncio.run(scenario())


def test_redis_out_of_memory_is_a_full_queue(redis_url: str) -> None:
    """At ``maxmemory`` with ``noeviction`` Redis refuses writes: the submit says "full" (503), not a crash (500)."""
    client = redis.Redis.from_url(redis_url)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + 16 * 1024 * 1024)

    async def scenario() -> None:
        api = make(redis_url, max_length=1000)
        stored = 0
        try:
            with pytest.raises(QueueFullError) as refused:
                for _ in range(20):  # 20 × 2 MiB cannot fit in 16 MiB
                    await api.submit(Job(payload=bytes(2 * 1024 * 1024), deadline=1e12))
                    stored += 1
            assert isinstance(refused.value.__cause__, redis.exceptions.OutOfMemoryError)
            assert stored >= 1 and await api.length() == stored  # the refused job left nothing behind
        finally:
            await api.close()

    try:
        asyncio.run(scenario())
    finally:
        client.config_set("maxmemory", 0)
        client.flushall()


def test_consumer_group_lag_and_pending_tell_an_autoscaler_waiting_and_running_jobs(redis_url: str) -> None:
    """What a KEDA ``redis-streams`` trigger reads: XINFO GROUPS lag (waiting) and XPENDING (running).

    The first submission creates the group, so the lag counts jobs before any worker ever ran (scale from zero), and
    deleting finished entries (XACK + XDEL) never leaves the lag undefined.
    """
    client = redis.Redis.from_url(redis_url)

    def lag_and_pending() -> tuple[int | None, int]:
        (group,) = client.xinfo_groups(stream_key("dehaze"))
        assert group["name"].decode() == CONSUMER_GROUP
        return group["lag"], int(client.xpending(stream_key("dehaze"), CONSUMER_GROUP)["pending"])

    async def scenario() -> None:
        api, worker = make(redis_url), make(redis_url)
        for _ in range(3):
            await api.submit(Job(payload=b"x", deadline=1e12))
        assert lag_and_pending() == (3, 0)  # no worker has run yet
        taken = await worker.take(2, block_ms=100)
        assert lag_and_pending() == (1, 2)
        await worker.finish(JobResult.failure(taken[0].id, 500, "done"))
        assert lag_and_pending() == (1, 1)
        await api.submit(Job(payload=b"y", deadline=1e12))
        assert lag_and_pending() == (2, 1)
        for job in [taken[1], *await worker.take(4, block_ms=100)]:
            await worker.finish(JobResult.failure(job.id, 500, "done"))
        assert lag_and_pending() == (0, 0) and client.xlen(stream_key("dehaze")) == 0
        await api.close()
        await worker.close()

    asyncio.run(scenario())
    client.close()
