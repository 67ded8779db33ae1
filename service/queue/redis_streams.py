"""The Redis Streams job queue: many API replicas and many workers on one Redis.

Keys (``p`` = ``settings.queue_name``):
    ``p:jobs``                 stream of small entries (``id``, ``enqueued_at``, ``deadline``, ``options``: the
                               ``OutputSpec`` as JSON, ``width``, ``height``, ``tiles``), consumer group ``workers``
                               (created with the stream by the first submission, or by a worker with MKSTREAM;
                               re-created after a NOGROUP error)
    ``p:payload:<job id>``     the uploaded bytes (SET ... EX ``result_ttl_s``)
    ``p:result:<job id>``      a list holding the encoded result; the request BLPOPs it (EXPIRE ``result_ttl_s``)
    ``p:fallback:<job id>``    a list holding a small 503 result, written at submission (EXPIRE ``result_ttl_s``)
    ``p:cancelled:<job id>``   cancellation marker (EX ``result_ttl_s``)
    ``p:worker:<worker id>``   heartbeat (EX three heartbeat intervals)

Submission is one Lua script: it creates the stream with its consumer group when the stream does not exist (so the
group's lag counts waiting jobs before any worker ever ran: a KEDA ``redis-streams`` trigger on ``lagCount`` can then
scale workers up from zero), checks ``XLEN < max_queue_length`` and only then stores the payload and adds the entry,
so the bound holds under any number of API replicas and nothing is stored when the queue is full. Entries leave the
stream only by ``XACK`` + ``XDEL`` after their result is stored, so ``XLEN`` is exactly "waiting plus in progress"
and no trimming can drop a pending job (deleting only delivered entries also keeps the group's lag defined).
Workers take new entries with ``XREADGROUP``; a job whose worker died stays pending and is taken over with
``XAUTOCLAIM`` once idle for ``claim_idle_ms`` (a live worker refreshes the idle time of the jobs it holds with every
heartbeat, so slow batches are not stolen). A job delivered more than ``delivery_limit`` times is answered with a
500 error ("job failed N times; giving up") and removed; so is an entry this version cannot read ("the job cannot be
read: ..."), at once, instead of failing every worker that takes it. Both go to ``take``'s ``on_poisoned``.

Redis at its ``maxmemory`` (policy ``noeviction``) refuses every command that may grow memory. Submission then
fails as a full queue (503 with Retry-After) and stores nothing. A worker whose result cannot be stored any more
must still answer the request once and acknowledge the job, or the job would be redelivered, recomputed and
finally failed as poisoned: so each submission also stores a small ready-made 503 answer under ``p:fallback``, and
when storing the result is refused the worker RENAMEs that key to the result key (RENAME needs no memory and wakes
the waiting BLPOP) and acknowledges the job. The request gets one clear 503, and nothing is computed again.

Connection errors and timeouts become ``QueueUnavailableError``; the client retries with backoff and reconnects
by itself after a Redis restart (scripts are reloaded and the consumer group re-created on demand).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from service.config import Settings
from service.queue.base import (
    Job,
    JobResult,
    OutputSpec,
    PoisonedHandler,
    QueueFullError,
    QueueUnavailableError,
    ResultTimeoutError,
)

__all__ = ["CONSUMER_GROUP", "RedisStreamsQueue", "decode_result", "encode_result", "stream_key"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONSUMER_GROUP = "workers"
"""The workers' consumer group on the job stream (an autoscaler reads its lag and pending entries)."""
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_SUBMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[11], '0', 'MKSTREAM')
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[3], ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
redis.call('XADD', KEYS[1], '*', 'id', ARGV[4], 'enqueued_at', ARGV[5], 'deadline', ARGV[6], 'options', ARGV[7],
           'width', ARGV[9], 'height', ARGV[10], 'tiles', ARGV[12])
return 1
"""
_UNSTORED_MESSAGE = "the result could not be stored: the queue's Redis is full (maxmemory); try again later"
_HEADER = struct.Struct(">I")
_COMMAND_TIMEOUT_S = 5.0
_BLOCK_MARGIN_S = 10.0


def stream_key(prefix: str) -> str:
    """The job stream's key for the queue name ``prefix`` (``DEHAZE_QUEUE_NAME``)."""
    return f"{prefix}:jobs"


def encode_result(result: JobResult) -> bytes:
    """One blob: 4-byte header length, JSON header, image bytes, depth bytes."""
    fields = asdict(result)
    image, depth = fields.pop("image") or b"", fields.pop("depth") or b""
    fields["image_len"] = len(image) if result.image is not None else -1
    fields["depth_len"] = len(depth) if result.depth is not None else -1
    header = json.dumps(fields).encode()
    return _HEADER.pack(len(header)) + header + image + depth


def decode_result(blob: bytes) -> JobResult:
    """The inverse of ``encode_result``."""
    (size,) = _HEADER.unpack_from(blob)
    fields: dict[str, Any] = json.loads(blob[_HEADER.size : _HEADER.size + size])
    offset = _HEADER.size + size
    image_len, depth_len = fields.pop("image_len"), fields.pop("depth_len")
    image = blob[offset : offset + image_len] if image_len >= 0 else None
    offset += max(0, image_len)
    depth = blob[offset : offset + depth_len] if depth_len >= 0 else None
    return JobResult(**fields, image=image, depth=depth)


def _job_from_entry(job_id: str, fields: dict[bytes, bytes], payload: bytes, deliveries: int) -> Job:
    """The job a stream entry describes (the inverse of ``submit``'s script); absent fields take their defaults.

    Raises:
        ValueError: a field this version cannot read (e.g. an output spec with an unknown key).
    """
    return Job(
        payload=payload,
        output=OutputSpec.from_wire(fields.get(b"options", b"{}")),
        id=job_id,
        enqueued_at=float(fields.get(b"enqueued_at", b"0")),
        deadline=float(fields.get(b"deadline", b"inf")),
        deliveries=deliveries,
        width=int(fields.get(b"width", b"0")),
        height=int(fields.get(b"height", b"0")),
        tiles=int(fields.get(b"tiles", b"0")),
    )


class RedisStreamsQueue:
    """``JobQueue`` on Redis Streams (see the module docstring for the keys and guarantees).

    Args:
        url: Redis URL.
        prefix: prefix of every key.
        max_length: stream length at which ``submit`` raises ``QueueFullError``.
        result_ttl_s: lifetime of payload, result and cancellation keys.
        delivery_limit: deliveries after which a job is failed as poisoned.
        claim_idle_ms: idle time after which a pending job of another consumer is taken over.
        heartbeat_s: heartbeat interval of the workers (keys live three intervals).
        consumer: this process's consumer name in the group (default host-pid-random).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "dehaze",
        max_length: int = 64,
        result_ttl_s: int = 300,
        delivery_limit: int = 3,
        claim_idle_ms: int = 30000,
        heartbeat_s: float = 2.0,
        consumer: str | None = None,
    ) -> None:
        self._redis = self._client(url, socket_timeout=_COMMAND_TIMEOUT_S)
        # Blocking reads (BLPOP, XREADGROUP BLOCK) wait longer than any fixed socket timeout; asyncio.wait_for
        # bounds them instead, with _BLOCK_MARGIN_S to spare.
        self._blocking = self._client(url, socket_timeout=None)
        self._stream = stream_key(prefix)
        self._prefix = prefix
        self._max_length = max_length
        self._ttl_s = result_ttl_s
        self._delivery_limit = delivery_limit
        self._claim_idle_ms = claim_idle_ms
        self._claim_every_s = max(0.05, claim_idle_ms / 2000.0)
        self._heartbeat_ttl_s = max(1, math.ceil(3 * heartbeat_s))
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._submit = self._redis.register_script(_SUBMIT_SCRIPT)
        self._group_ready = False
        self._last_claim = -math.inf
        self._in_hand: dict[str, bytes] = {}  # job id -> stream entry id, for XACK/XDEL and idle refresh

    @staticmethod
    def _client(url: str, socket_timeout: float | None) -> aioredis.Redis:
        """A client that retries with backoff and reconnects by itself (e.g. after a Redis restart)."""
        return aioredis.Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=10,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            socket_keepalive=True,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStreamsQueue:
        """A queue configured from ``DEHAZE_*`` settings (``redis_url`` must be set)."""
        if not settings.redis_url:
            raise ValueError("redis_url is not set")
        return cls(
            settings.redis_url,
            prefix=settings.queue_name,
            max_length=settings.max_queue_length,
            result_ttl_s=settings.result_ttl_s,
            delivery_limit=settings.delivery_limit,
            claim_idle_ms=settings.claim_idle_ms,
            heartbeat_s=settings.heartbeat_s,
        )

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    async def _call(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis interaction, turning connection failures into QueueUnavailableError.

        A connection error is tried once more: after a Redis restart the pool still holds connections to the old
        server, and the first command on each fails (and drops it) even though Redis is back. A retried submit
        whose first attempt did reach Redis may add the job twice; the worker then computes it twice, harmlessly.
        Redis at its ``maxmemory`` (policy ``noeviction``) refuses writes with an OOM error: the queue is full,
        so the API answers 503 with Retry-After, as for a full stream.
        """
        try:
            try:
                return await action()
            except RedisConnectionError:
                logger.info("Redis connection lost; reconnecting")
                return await action()
        except _UNAVAILABLE as error:
            raise QueueUnavailableError(f"Redis is unavailable: {error}") from error
        except RedisOutOfMemoryError as error:
            logger.warning("Redis is out of memory (maxmemory): refusing new jobs until it frees up")
            raise QueueFullError(retry_after_s=2.0) from error

    async def _pipeline(
        self, build: Callable[[Any], object], *, transaction: bool = False, raise_on_error: bool = True
    ) -> list[Any]:
        """Build a pipeline with ``build(pipe)`` and execute it through ``_call``.

        Each attempt builds a fresh pipeline: redis-py empties a pipeline whose execute failed, so retrying the same
        one after a dropped connection (the first command after a Redis restart) would run nothing and return [].
        """

        async def attempt() -> list[Any]:
            pipe = self._redis.pipeline(transaction=transaction)
            build(pipe)
            return list(await pipe.execute(raise_on_error=raise_on_error))

        return await self._call(attempt)

    # -- API side -------------------------------------------------------------------------------
    async def submit(self, job: Job) -> None:
        """Store the payload and add the entry atomically, unless the stream already holds ``max_length`` jobs."""
        args: list[bytes | str | int | float] = [
            self._max_length,
            self._ttl_s,
            job.payload,
            job.id,
            repr(job.enqueued_at),
            repr(job.deadline),
            job.output.to_wire(),
            encode_result(JobResult.failure(job.id, 503, _UNSTORED_MESSAGE)),
            job.width,
            job.height,
            CONSUMER_GROUP,
            job.tiles,
        ]
        keys = [self._stream, self._key("payload", job.id), self._key("fallback", job.id)]
        added = await self._call(lambda: self._submit(keys=keys, args=args))
        if not added:
            raise QueueFullError(retry_after_s=1.0)

    async def wait_result(self, job_id: str, timeout_s: float) -> JobResult:
        """BLPOP the job's result key; ResultTimeoutError after ``timeout_s``."""
        key = self._key("result", job_id)
        # wait_for guards against a connection that hangs without failing (-> QueueUnavailableError via _call)
        popped = await self._call(
            lambda: asyncio.wait_for(self._blocking.blpop([key], timeout=timeout_s), timeout_s + _BLOCK_MARGIN_S)
        )
        if popped is None:
            raise ResultTimeoutError(f"no result for job {job_id} within {timeout_s:g} s")
        return decode_result(bytes(popped[1]))  # type: ignore[arg-type]

    async def cancel(self, job_id: str) -> None:
        """Drop the job's payload, result and fallback, and mark it cancelled; a worker skips or discards it.

        At maxmemory the marker cannot be written (the deletions, which free memory, still happen): the job is then
        computed and its answer dropped, and this raises ``QueueFullError``.
        """

        def build(pipe: Any) -> None:  # not a transaction: at maxmemory Redis refuses every command inside MULTI
            pipe.delete(self._key("payload", job_id), self._key("result", job_id), self._key("fallback", job_id))
            pipe.set(self._key("cancelled", job_id), b"1", ex=self._ttl_s)

        await self._pipeline(build)

    async def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        """The ids among ``job_ids`` whose cancellation marker exists (one round trip)."""
        if not job_ids:
            return set()
        flags = await self._pipeline(lambda pipe: [pipe.exists(self._key("cancelled", job_id)) for job_id in job_ids])
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def length(self) -> int:
        """Stream length: jobs waiting plus in progress (entries are deleted only when finished)."""
        return int(await self._call(lambda: self._redis.xlen(self._stream)))

    async def workers_alive(self) -> int:
        """Heartbeat keys that have not expired."""

        async def count() -> int:
            return len([key async for key in self._redis.scan_iter(match=self._key("worker", "*"), count=500)])

        return await self._call(count)

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            return bool(await self._redis.ping())
        except (*_UNAVAILABLE, ResponseError):
            return False

    # -- worker side ----------------------------------------------------------------------------
    async def take(self, max_jobs: int, block_ms: int, on_poisoned: PoisonedHandler | None = None) -> list[Job]:
        """Reclaim idle jobs of dead workers (periodically), then read new entries; skip cancelled/expired jobs.

        Jobs past the delivery limit and unreadable entries are answered with a 500 and go to ``on_poisoned``.
        """
        if max_jobs < 1:
            return []
        entries: list[tuple[bytes, dict[bytes, bytes], int]] = []
        if time.monotonic() - self._last_claim >= self._claim_every_s:
            self._last_claim = time.monotonic()
            entries = await self._with_group(lambda: self._autoclaim(max_jobs))
        if len(entries) < max_jobs:
            block = None if entries or block_ms <= 0 else block_ms
            fresh = await self._with_group(lambda: self._read_new(max_jobs - len(entries), block))
            entries.extend(fresh)
        return await self._to_jobs(entries, on_poisoned)

    async def _read_new(self, count: int, block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        read = self._blocking.xreadgroup(
            CONSUMER_GROUP, self.consumer, {self._stream: ">"}, count=count, block=block_ms
        )
        reply: Any = await asyncio.wait_for(read, (block_ms or 0) / 1000.0 + _BLOCK_MARGIN_S)
        entries: list[tuple[bytes, dict[bytes, bytes], int]] = []
        for _stream, messages in reply or []:
            entries.extend((entry_id, fields, 1) for entry_id, fields in messages if fields)
        return entries

    async def _autoclaim(self, count: int) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        """XAUTOCLAIM jobs idle longer than ``claim_idle_ms``, with their delivery counts from XPENDING."""
        reply = await self._redis.xautoclaim(
            self._stream, CONSUMER_GROUP, self.consumer, min_idle_time=self._claim_idle_ms, start_id="0-0", count=count
        )
        messages = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if not messages:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for entry_id, _ in messages:
            pipe.xpending_range(self._stream, CONSUMER_GROUP, min=entry_id, max=entry_id, count=1)
        pending = await pipe.execute()
        out = []
        for (entry_id, fields), info in zip(messages, pending, strict=True):
            deliveries = int(info[0]["times_delivered"]) if info else self._delivery_limit + 1
            logger.warning("reclaimed job entry %s (delivery %d) from a silent worker", entry_id.decode(), deliveries)
            out.append((entry_id, fields, deliveries))
        return out

    async def _to_jobs(
        self, entries: list[tuple[bytes, dict[bytes, bytes], int]], on_poisoned: PoisonedHandler | None
    ) -> list[Job]:
        """Fetch payloads; fail poisoned jobs, drop cancelled or expired ones, hand the rest out."""
        if not entries:
            return []
        ids = [fields[b"id"].decode() for _, fields, _ in entries]

        def build(pipe: Any) -> None:
            for job_id in ids:
                pipe.get(self._key("payload", job_id))
                pipe.exists(self._key("cancelled", job_id))

        replies = await self._pipeline(build)
        jobs: list[Job] = []
        for index, ((entry_id, fields, deliveries), job_id) in enumerate(zip(entries, ids, strict=True)):
            payload, cancelled = replies[2 * index], replies[2 * index + 1]
            self._in_hand[job_id] = entry_id
            try:
                job = _job_from_entry(job_id, fields, payload or b"", deliveries)
            except ValueError as error:
                await self._give_up(Job(payload=b"", id=job_id), f"the job cannot be read: {error}", on_poisoned)
                continue
            if deliveries > self._delivery_limit:
                message = f"job failed {deliveries - 1} times; giving up"
                await self._give_up(job, message, on_poisoned)
            elif cancelled or payload is None:
                logger.info("skipping job %s (%s)", job_id, "cancelled" if cancelled else "payload expired")
                await self._settle(job_id, None)
            else:
                jobs.append(job)
        return jobs

    async def _give_up(self, job: Job, message: str, on_poisoned: PoisonedHandler | None) -> None:
        """Answer the job with a 500 saying why, remove it, and report it.

        An unreadable entry is reported as a stand-in ``Job`` with only its id: its submission time counts as now.
        """
        logger.error("job %s: %s", job.id, message)
        await self._settle(job.id, JobResult.failure(job.id, 500, message))
        if on_poisoned is not None:
            on_poisoned(job)

    async def finish(self, result: JobResult) -> None:
        """Store the result (unless the job was cancelled), then XACK + XDEL its entry."""
        await self._settle(result.job_id, result)

    async def _settle(self, job_id: str, result: JobResult | None) -> None:
        """Store the result (unless cancelled or None), drop the payload and fallback, acknowledge the entry.

        When Redis refuses the result (maxmemory), the fallback 503 answer becomes the result instead and the entry
        is acknowledged all the same: a job is answered once and never computed again.
        """
        entry_id = self._in_hand.pop(job_id, None)
        cancelled = await self._call(lambda: self._redis.exists(self._key("cancelled", job_id)))
        result_key, fallback_key = self._key("result", job_id), self._key("fallback", job_id)
        blob = encode_result(result) if result is not None and not cancelled else None

        def build(pipe: Any) -> None:
            if blob is not None:
                pipe.rpush(result_key, blob)
                pipe.expire(result_key, self._ttl_s)
            pipe.delete(self._key("payload", job_id), fallback_key)
            self._acknowledge(pipe, entry_id)

        try:
            await self._pipeline(build, transaction=True)
        except QueueFullError:  # maxmemory: the transaction was refused as a whole, nothing was written
            await self._settle_with_fallback(job_id, entry_id, answer=result is not None and not cancelled)
        except ResponseError as error:  # NOGROUP after a Redis restart: the entry is gone with the group anyway
            logger.warning("job %s: acknowledging failed: %s", job_id, error)

    async def _settle_with_fallback(self, job_id: str, entry_id: bytes | None, answer: bool) -> None:
        """Answer with the stored 503 (RENAME needs no memory) and acknowledge; only commands Redis allows at OOM.

        Not a transaction: at maxmemory Redis refuses to queue any command inside MULTI.
        """

        def build(pipe: Any) -> None:
            pipe.delete(self._key("payload", job_id))
            if answer:
                pipe.execute_command("RENAME", self._key("fallback", job_id), self._key("result", job_id))
            else:
                pipe.delete(self._key("fallback", job_id))
            self._acknowledge(pipe, entry_id)

        replies = await self._pipeline(build, raise_on_error=False)
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if answer and not failed:
            logger.error("job %s: Redis is at maxmemory; the result could not be stored, answered 503", job_id)
        elif failed:
            logger.error("job %s: Redis is at maxmemory and the fallback answer failed: %s", job_id, failed[0])

    def _acknowledge(self, pipe: Any, entry_id: bytes | None) -> None:
        if entry_id is not None:
            pipe.xack(self._stream, CONSUMER_GROUP, entry_id)
            pipe.xdel(self._stream, entry_id)

    async def heartbeat(self, worker_id: str) -> None:
        """Refresh this worker's key and the idle time of the jobs it holds (so they are not reclaimed)."""
        held = list(self._in_hand.values())

        def build(pipe: Any) -> None:
            pipe.set(self._key("worker", worker_id), repr(time.time()), ex=self._heartbeat_ttl_s)
            if held:
                pipe.xclaim(self._stream, CONSUMER_GROUP, self.consumer, 0, held, justid=True)

        try:
            await self._pipeline(build)
        except ResponseError as error:
            logger.warning("heartbeat: %s", error)

    async def close(self) -> None:
        """Close both connection pools."""
        await self._redis.aclose()
        await self._blocking.aclose()

    # -- consumer group -------------------------------------------------------------------------
    async def _with_group(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run a group command, creating the group first if needed or if Redis lost it (NOGROUP)."""
        if not self._group_ready:
            await self._create_group()
        try:
            return await self._call(action)
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            logger.warning("consumer group missing (Redis restarted?); re-creating it")
            self._in_hand.clear()
            await self._create_group()
            return await self._call(action)

    async def _create_group(self) -> None:
        try:
            await self._call(lambda: self._redis.xgroup_create(self._stream, CONSUMER_GROUP, id="0", mkstream=True))
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True
