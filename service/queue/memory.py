"""The in-process job queue: the embedded default (``dehaze serve``) and the fast backend of the tests.

It lives in one event loop: the API's request handlers and the embedded worker share it. It keeps the same
promises as the Redis backend where they make sense in one process: a bounded length checked before anything is
stored, results handed to the waiting request, cancellation, a length that counts waiting plus running jobs, and
worker liveness from heartbeats. There is no redelivery: a job taken by a worker that crashes is lost with the
process anyway. So this queue never gives up on a job (it holds ``Job`` objects: nothing to parse either), and the
``on_poisoned`` handler of ``take`` is never called.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence

from service.queue.base import (
    Job,
    JobResult,
    PoisonedHandler,
    QueueFullError,
    QueueUnavailableError,
    ResultTimeoutError,
)

__all__ = ["MemoryQueue"]


class MemoryQueue:
    """An asyncio queue implementing ``JobQueue``.

    Args:
        max_length: jobs waiting plus running at which ``submit`` raises ``QueueFullError``.
        result_ttl_s: how long a result nobody has collected is kept.
        heartbeat_s: the workers' heartbeat interval; a worker counts as alive for three intervals.
        clock: monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        max_length: int,
        result_ttl_s: float = 300.0,
        heartbeat_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._max_length = max_length
        self._result_ttl_s = result_ttl_s
        self._heartbeat_ttl_s = 3.0 * heartbeat_s
        self._clock = clock
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        self._results: dict[str, tuple[JobResult, float]] = {}
        self._futures: dict[str, asyncio.Future[JobResult]] = {}
        self._heartbeats: dict[str, float] = {}
        self._arrived: asyncio.Event | None = None
        self._closed = False

    # -- API side -------------------------------------------------------------------------------
    async def submit(self, job: Job) -> None:
        """Enqueue a job; raises QueueFullError when ``max_length`` jobs are waiting or running."""
        if len(self._waiting) + len(self._running) >= self._max_length:
            raise QueueFullError(retry_after_s=1.0)
        self._waiting.append(job)
        self._signal().set()

    async def wait_result(self, job_id: str, timeout_s: float) -> JobResult:
        """The job's result; raises ResultTimeoutError after ``timeout_s``."""
        stored = self._results.pop(job_id, None)
        if stored is not None:
            return stored[0]
        future = self._futures.get(job_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._futures[job_id] = future
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError as error:
            raise ResultTimeoutError(f"no result for job {job_id} within {timeout_s:g} s") from error
        finally:
            if future.done():
                self._futures.pop(job_id, None)

    async def cancel(self, job_id: str) -> None:
        """Drop a waiting job; a running job's result is discarded when it arrives."""
        before = len(self._waiting)
        self._waiting = collections.deque(j for j in self._waiting if j.id != job_id)
        if len(self._waiting) == before and job_id in self._running:
            self._cancelled.add(job_id)
        self._results.pop(job_id, None)
        future = self._futures.pop(job_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def length(self) -> int:
        """Jobs waiting plus running."""
        return len(self._waiting) + len(self._running)

    async def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        """The running jobs among ``job_ids`` whose request was cancelled."""
        return {job_id for job_id in job_ids if job_id in self._cancelled}

    async def workers_alive(self) -> int:
        """Workers whose last heartbeat is younger than three heartbeat intervals."""
        now = self._clock()
        return sum(1 for seen in self._heartbeats.values() if now - seen <= self._heartbeat_ttl_s)

    async def ping(self) -> bool:
        """Always reachable while open."""
        return not self._closed

    # -- worker side ----------------------------------------------------------------------------
    async def take(self, max_jobs: int, block_ms: int, on_poisoned: PoisonedHandler | None = None) -> list[Job]:
        """Up to ``max_jobs`` waiting jobs, waiting at most ``block_ms`` for the first one (never poisoned ones)."""
        if max_jobs < 1:
            return []
        if not self._waiting and block_ms > 0:
            signal = self._signal()
            signal.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), block_ms / 1000.0)
        jobs: list[Job] = []
        while self._waiting and len(jobs) < max_jobs:
            job = self._waiting.popleft()
            job.deliveries += 1
            self._running.add(job.id)
            jobs.append(job)
        return jobs

    async def finish(self, result: JobResult) -> None:
        """Hand the result to the waiting request (or keep it for ``result_ttl_s``)."""
        job_id = result.job_id
        self._running.discard(job_id)
        if job_id in self._cancelled:
            self._cancelled.discard(job_id)
            return
        future = self._futures.get(job_id)
        if future is not None and not future.done():
            future.set_result(result)
        else:
            self._purge_results()
            self._results[job_id] = (result, self._clock())

    async def heartbeat(self, worker_id: str) -> None:
        """Record that ``worker_id`` is alive."""
        self._heartbeats[worker_id] = self._clock()

    async def close(self) -> None:
        """Stop answering pings; requests still waiting get QueueUnavailableError."""
        self._closed = True
        for future in self._futures.values():
            if not future.done():
                future.set_exception(QueueUnavailableError("the in-process queue was closed"))
        self._futures.clear()

    # -- helpers --------------------------------------------------------------------------------
    def _signal(self) -> asyncio.Event:
        """The 'a job arrived' event, created inside the running loop on first use."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
        return self._arrived

    def _purge_results(self) -> None:
        """Forget results nobody collected within ``result_ttl_s`` (bounded memory)."""
        now = self._clock()
        stale = [k for k, (_, stored) in self._results.items() if now - stored > self._result_ttl_s]
        for key in stale:
            del self._results[key]
