"""The worker: take batches of jobs from the queue, decode, compute, stitch, encode, hand back the results.

One iteration: ``collect_batch`` closes a batch (full by tiles: the API counted them from the image's header and
sent the count with the job, so the worker never parses a header); jobs past their deadline are answered as
expired; the rest are checked against the per-request compute budget (from the size on the job) and decoded (a job
that cannot be decoded, would cost too much, or decodes to another size than its header announced, fails alone);
their pieces are grouped by shape into forwards of at most ``max_batch_size`` items; a job is encoded and finished
as soon as its plan has no piece missing. Jobs cancelled before they start never reach the worker (the queue skips
them in ``take``); before every further forward the worker asks the queue which of its jobs were cancelled since (the
client went away or timed out) and drops those, and the ones past their deadline, with the rest of their tiles: no
forward is spent on a request nobody waits for (``cancelled`` and ``expired`` outcomes, and
``dehaze_cancelled_tiles_total``). Jobs the queue gives up on (``take``'s ``on_poisoned``) count as ``poisoned``.
When ``stop`` is set the worker finishes the jobs it holds and returns. An unreachable queue (Redis restarting)
does not end it: it pauses, retries with backoff and carries on once the queue answers again.

Decoding, forwards and encoding run on the model thread (``model.openmp.ModelThread``, the one thread of the process
that also loaded and warmed the model), so the event loop (and, in embedded mode, the API) stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.licence import UNKNOWN_LICENCE
from model.openmp import ModelThread
from service import codec
from service.config import Settings
from service.errors import MalformedImageError, status_of
from service.queue.base import Job, JobQueue, JobResult, QueueUnavailableError
from service.worker.batching import collect_batch, group_by_shape
from service.worker.observers import NullObserver, WorkerObserver, default_observer
from service.worker.plan import ImagePlan, Piece
from service.worker.runner import ItemOutput, Runner, served_artifact
from service.worker.tiling import check_compute
from service.worker.warm_up import warm_up

__all__ = ["Worker", "run_worker"]

logger = logging.getLogger(__name__)

_TAKE_BLOCK_MS = 250  # how long one take waits for a first job; bounds how late a stop request is noticed
_RETRY_MIN_S, _RETRY_MAX_S = 0.1, 2.0  # pause after the queue was unreachable: doubles per failure up to the max


@dataclass
class _Work:
    """A decoded job in progress."""

    job: Job
    plan: ImagePlan
    decode_ms: float
    started: float
    compute_ms: float = 0.0
    error: str | None = None
    abandoned: bool = False


class Worker:
    """One worker process's loop over the queue (no per-request state survives a batch).

    Args:
        queue: the job queue.
        settings: batching, tiling and limit settings.
        runner: the loaded model.
        observer: metric hooks.
        worker_id: the name in heartbeats and logs.
        clock: wall clock (``time.time``), comparable with ``Job.enqueued_at`` and ``Job.deadline``.
        model_thread: the thread that decodes, computes and encodes (default: a new one); the one the runner was
            loaded and warmed on, so that the process keeps a single OpenMP team (``model.openmp``).
    """

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        runner: Runner,
        observer: WorkerObserver | None = None,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        model_thread: ModelThread | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.runner = runner
        self.max_batch_size = settings.batch_size_on(runner.device.type)
        self.compute_budget = settings.compute_budget_on(runner.device.type)
        self.observer: WorkerObserver = observer or NullObserver()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.clock = clock
        self.model_thread = model_thread or ModelThread()

    def _poisoned(self, job: Job) -> None:
        """The queue gave up on ``job`` (and answered it): count it."""
        self.observer.job("poisoned", max(0.0, self.clock() - job.enqueued_at))

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Heartbeat and process batches until ``stop`` is set; jobs in hand are finished first."""
        beats = asyncio.create_task(self._heartbeats(stop), name=f"heartbeat-{self.worker_id}")
        try:
            await self.queue.heartbeat(self.worker_id)
            if ready is not None:
                ready.set()
            logger.info("worker %s ready", self.worker_id)
            failures = 0
            while not stop.is_set():
                try:
                    jobs = await self.collect()
                except QueueUnavailableError as error:  # e.g. Redis restarting: wait and reconnect, do not exit
                    failures += 1
                    await self._pause_after_failure(stop, failures, error)
                    continue
                failures = 0
                if jobs:
                    await self.process(jobs)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            logger.info("worker %s stopped", self.worker_id)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.queue.heartbeat(self.worker_id)
            except Exception as error:  # the queue may be briefly down; the next beat retries
                logger.warning("heartbeat failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_s)

    async def _pause_after_failure(self, stop: asyncio.Event, failures: int, error: Exception) -> None:
        """Wait before the next take (0.1 s, doubling per failure up to 2 s); returns at once when stopped."""
        if failures == 1:
            logger.warning("the job queue is unavailable (%s); retrying until it is back", error)
        delay = min(_RETRY_MAX_S, _RETRY_MIN_S * 2 ** (failures - 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def collect(self) -> list[Job]:
        """One batch of jobs (possibly empty after ``_TAKE_BLOCK_MS``).

        Raises:
            QueueUnavailableError: when the queue cannot be reached before any job was taken. Once jobs are in
                hand, a failing take closes the batch instead, so that those jobs are processed, not dropped.
        """
        taken: list[Job] = []

        async def take(max_jobs: int, block_ms: int) -> list[Job]:
            try:
                jobs = await self.queue.take(max_jobs, block_ms, on_poisoned=self._poisoned)
            except QueueUnavailableError:
                if not taken:
                    raise
                return []
            taken.extend(jobs)
            return jobs

        return await collect_batch(
            take,
            cost=self._cost,
            submitted_at=lambda job: job.enqueued_at,
            clock=self.clock,
            max_batch_size=self.max_batch_size,
            max_batch_wait_s=self.settings.max_batch_wait_ms / 1000.0,
            block_ms=_TAKE_BLOCK_MS,
        )

    @staticmethod
    def _cost(job: Job) -> int:
        """Tiles a job will bring, as the API counted them (1 when unknown).

        Nothing is parsed here: this runs on the event loop, which in embedded mode also serves the API.
        """
        return max(1, job.tiles)

    # -- one batch ------------------------------------------------------------------------------
    async def process(self, jobs: list[Job]) -> None:
        """Compute and finish every job of a batch; a failing job fails alone."""
        started = self.clock()
        live: list[Job] = []
        for job in jobs:
            if job.deadline < started:
                await self._finish(job, JobResult.failure(job.id, 504, "the job expired before it started"), "expired")
            else:
                live.append(job)
        decoded = await self.model_thread.run(self._decode_all, live)
        works: list[_Work] = []
        for job, outcome in zip(live, decoded, strict=True):
            if isinstance(outcome, JobResult):
                await self._finish(job, outcome, "failed")
            else:
                works.append(outcome)
        pieces = [(work, piece) for work in works for piece in work.plan.pieces]
        waits = [max(0.0, started - work.job.enqueued_at) for work in works]
        total_compute = 0.0
        forwards = group_by_shape(pieces, lambda item: item[1].shape, self.max_batch_size)
        for index, planned in enumerate(forwards):
            await self._drop_abandoned(works)
            group = [(work, piece) for work, piece in planned if not work.abandoned]
            if not group:
                continue
            seconds = await self._forward(group, waits if index == 0 else [])
            total_compute += seconds
            for work in {id(w): w for w, _ in group}.values():
                if work.plan.done:
                    await self._complete(work)
        logger.info(
            "batch jobs=%s tiles=%d forwards=%d max_wait_ms=%.1f compute_ms=%.1f",
            ",".join(job.id for job in jobs),
            len(pieces),
            len(forwards),
            1000.0 * max(waits, default=0.0),
            1000.0 * total_compute,
        )
        stats = self.runner.memory_stats()
        if stats is not None:
            self.observer.gpu_memory(stats)

    async def _drop_abandoned(self, works: list[_Work]) -> None:
        """Finish the unfinished jobs whose request was cancelled or whose deadline passed, skipping their tiles."""
        running = [work for work in works if not work.plan.done and not work.abandoned and work.error is None]
        if not running:
            return
        try:
            cancelled = await self.queue.cancelled([work.job.id for work in running])
        except QueueUnavailableError:  # cannot tell: keep computing, the deadline still applies
            cancelled = set()
        now = self.clock()
        for work in running:
            job = work.job
            if job.deadline < now:  # its request has timed out (504) and cancelled it, or is about to
                outcome = "expired"
                result = JobResult.failure(job.id, 504, "the job expired while it was being computed")
            elif job.id in cancelled:
                outcome, result = "cancelled", JobResult.failure(job.id, 499, "the request was cancelled")
            else:
                continue
            work.abandoned = True
            missing = work.plan.missing
            logger.info("job %s %s: %d of %d tiles skipped", job.id, outcome, missing, len(work.plan.pieces))
            self.observer.cancelled_tiles(missing)
            await self._finish(job, result, outcome)

    def _decode_all(self, jobs: list[Job]) -> list[_Work | JobResult]:
        """Check each job's cost and decode it (in a worker thread); failures become that job's error result."""
        out: list[_Work | JobResult] = []
        cfg = self.settings
        for job in jobs:
            begun, t0 = self.clock(), time.perf_counter()
            try:
                check_compute(
                    job.height, job.width, cfg.tile_size, cfg.tile_overlap, cfg.bucket_multiple, self.compute_budget
                )
                image = codec.decode_image(job.payload, cfg.max_pixels)
                _check_size(job, image)
                plan = ImagePlan(image, cfg.tile_size, cfg.tile_overlap, cfg.bucket_multiple)
            except Exception as error:
                status = status_of(error)
                logger.warning("job %s cannot be decoded: %s", job.id, error)
                out.append(JobResult.failure(job.id, status, str(error)))
                continue
            out.append(_Work(job, plan, 1000.0 * (time.perf_counter() - t0), started=begun))
        return out

    async def _forward(self, group: list[tuple[_Work, Piece]], waits: Sequence[float]) -> float:
        """Run one forward (in a thread) and hand each output to its job; returns the compute seconds."""

        def compute() -> tuple[list[ItemOutput], float]:
            items = [piece.pixels(work.plan.image) for work, piece in group]
            t0 = time.perf_counter()
            outputs = self.runner.run_items(items)
            return outputs, time.perf_counter() - t0

        outputs, seconds = await self.model_thread.run(compute)
        self.observer.batch(len(group), waits, seconds)
        for (work, piece), output in zip(group, outputs, strict=True):
            work.compute_ms += 1000.0 * seconds / len(group)
            if isinstance(output, Exception):
                work.error = work.error or f"processing failed: {type(output).__name__}: {output}"
                work.plan.skip()
            elif work.error is None:
                work.plan.add(piece, *output)
            else:  # an earlier piece of this image failed: its job fails, this output is not needed
                work.plan.skip()
        return seconds

    async def _complete(self, work: _Work) -> None:
        """Encode a job whose pieces are all done (or answer its error) and finish it."""
        job = work.job
        if work.error is not None:
            await self._finish(job, JobResult.failure(job.id, 500, work.error), "failed")
            return
        try:
            result = await self.model_thread.run(self._encode, work)
        except Exception as error:
            logger.exception("job %s cannot be encoded", job.id)
            result = JobResult.failure(job.id, 500, f"encoding failed: {error}")
        await self._finish(job, result, "ok" if result.ok else "failed")

    def _encode(self, work: _Work) -> JobResult:
        job, spec = work.job, work.job.output
        t0 = time.perf_counter()
        dehazed, depth = work.plan.outputs()
        image = codec.encode_image(dehazed, spec.format, spec.quality) if spec.want_image else None
        depth_bytes = codec.encode_depth(depth, spec.depth_colormap) if spec.want_depth else None
        return JobResult(
            job_id=job.id,
            image=image,
            image_media_type=codec.media_type(spec.format) if image is not None else None,
            depth=depth_bytes,
            width=int(dehazed.shape[1]),
            height=int(dehazed.shape[0]),
            timings_ms={
                "queue_wait": 1000.0 * max(0.0, work.started - job.enqueued_at),
                "decode": work.decode_ms,
                "compute": work.compute_ms,
                "encode": 1000.0 * (time.perf_counter() - t0),
            },
            model=dict(self.runner.info),
        )

    async def _finish(self, job: Job, result: JobResult, outcome: str) -> None:
        try:
            await self.queue.finish(result)
        except Exception:
            logger.exception("job %s: the result could not be stored", job.id)
            return
        self.observer.job(outcome, max(0.0, self.clock() - job.enqueued_at))


def _check_size(job: Job, image: np.ndarray) -> None:
    """Refuse an image that decodes to another size than the one the API probed from its header and priced.

    Raises:
        MalformedImageError: the sizes differ (HTTP 422); a job without a size (0×0) always does.
    """
    height, width = image.shape[:2]
    if (width, height) != (job.width, job.height):
        raise MalformedImageError(
            f"the image decodes to {width}x{height} pixels, but its header says {job.width}x{job.height}"
        )


async def run_worker(
    queue: JobQueue,
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    worker_id: str | None = None,
    runner: Runner | None = None,
    observer: WorkerObserver | None = None,
) -> None:
    """Load the model once (unless ``runner`` is given), warm it up, set ``ready``, serve until ``stop``.

    Args:
        queue: the job queue.
        settings: the service settings (artifact path, device, dtype, batching, tiling).
        ready: set once the model is warm and the first heartbeat is written.
        stop: set it to drain the jobs in hand and return; None runs until cancelled.
        worker_id: the name in heartbeats (default: host-pid).
        runner: a ready runner (tests); default loads the artifact of ``runner.served_artifact(settings)``.
        observer: metric hooks; default ``MetricsObserver``.
    """
    observer = observer or default_observer()
    model_thread = ModelThread()
    try:
        if settings.torch_threads:
            await model_thread.run(_set_torch_threads, settings.torch_threads)
        if runner is None:
            path, _ = served_artifact(settings)
            logger.info("loading %s on %s (%s)", path, settings.device, settings.dtype)
            runner = await model_thread.run(Runner.from_artifact, path, settings.device, settings.dtype)
        await model_thread.run(warm_up, runner, settings)
        observer.model_info(
            runner.info.get("variant", "unknown"),
            runner.info.get("version", "unknown"),
            runner.device.type,
            runner.dtype,
            runner.info.get("licence", UNKNOWN_LICENCE),
        )
        worker = Worker(queue, settings, runner, observer, worker_id, model_thread=model_thread)
        await worker.run(stop or asyncio.Event(), ready)
    finally:
        model_thread.close()


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
