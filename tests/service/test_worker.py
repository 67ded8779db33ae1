"""The worker loop with a tiny conv model: mixed sizes, failures kept to their job, cancellation, draining."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from service import codec
from service.api.jobs import check_image
from service.config import Settings
from service.queue.base import Job, JobQueue, JobResult, OutputSpec
from service.queue.memory import MemoryQueue
from service.worker.loop import run_worker
from service.worker.observers import NullObserver
from service.worker.runner import Runner, from_tensor, infer_image, to_tensor
from tests.service.live_server import model_settings, tiny_model, tiny_weights

__all__ = ["tiny_model", "tiny_weights"]  # fixtures


class TinyNet(torch.nn.Module):
    """Any module with the pipeline contract: x N×3×H×W [0,1] -> (dehazed N×3×H×W, depth N×1×H×W)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(self.conv(x))
        return y[:, :3], y[:, 3:]


class IdentityNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.mean(dim=1, keepdim=True)


class FailsOnRed(IdentityNet):
    """Raises when any item in the batch is pure red, like a model crashing on one input."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bool(((x[:, 0] > 0.99) & (x[:, 1] < 0.01)).flatten(1).all(dim=1).any()):
            raise RuntimeError("this input breaks the model")
        return super().forward(x)


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.outcomes: list[str] = []

    def batch(self, size: int, waits_s: Any, compute_s: float) -> None:
        self.batches.append((size, len(waits_s)))

    def job(self, outcome: str, duration_s: float | None) -> None:
        self.outcomes.append(outcome)


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "max_batch_size": 4, "max_batch_wait_ms": 5, "tile_size": 64, "tile_overlap": 8, "bucket_multiple": 16,
        "heartbeat_s": 0.2, "max_queue_length": 32, "max_pixels": 1_000_000,
    }  # fmt: skip
    return Settings(**{**base, **overrides})


def png(width: int, height: int, colour: tuple[int, int, int] | None = None, seed: int = 0) -> bytes:
    if colour is None:
        pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (width, height), colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def with_worker(
    queue: JobQueue,
    cfg: Settings,
    model: torch.nn.Module,
    body: Callable[[], Awaitable[Any]],
    observer: NullObserver | None = None,
) -> Any:
    """Run ``body`` while a worker serves ``queue``; stop and drain the worker afterwards."""
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_worker(queue, cfg, ready=ready, stop=stop, runner=Runner(model, "cpu"), observer=observer or NullObserver())
    )
    await asyncio.wait_for(ready.wait(), 30)
    try:
        return await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def probed_job(payload: bytes, output: OutputSpec | None = None, **fields: Any) -> Job:
    """A job as the API builds it: size and tile count read from the header with the tests' settings."""
    probe = await check_image(payload, settings())
    return Job(payload, output or OutputSpec(), width=probe.width, height=probe.height, tiles=probe.tiles, **fields)


async def submit_all(queue: JobQueue, payloads: list[bytes], **output: Any) -> list[Job]:
    jobs = [await probed_job(p, OutputSpec(**output)) for p in payloads]
    for job in jobs:
        await queue.submit(job)
    return jobs


async def results_of(queue: JobQueue, jobs: list[Job], timeout_s: float = 60) -> list[JobResult]:
    return list(await asyncio.gather(*(queue.wait_result(j.id, timeout_s) for j in jobs)))


def test_mixed_sizes_are_batched_tiled_and_returned_at_their_size() -> None:
    cfg = settings()
    sizes = [(20, 10), (33, 17), (20, 12), (150, 70), (1, 1)]
    observer = RecordingObserver()

    async def scenario() -> list[JobResult]:
        queue = MemoryQueue(max_length=32)
        jobs = await submit_all(queue, [png(w, h, seed=i) for i, (w, h) in enumerate(sizes)], want_depth=True)
        return await with_worker(queue, cfg, TinyNet(), lambda: results_of(queue, jobs), observer)

    results = asyncio.run(scenario())
    for (w, h), result in zip(sizes, results, strict=True):
        assert result.ok, result.error
        assert (result.width, result.height) == (w, h)
        assert Image.open(io.BytesIO(result.image or b"")).size == (w, h)
        assert Image.open(io.BytesIO(result.depth or b"")).size == (w, h)
        assert set(result.timings_ms) == {"queue_wait", "decode", "compute", "encode"}
    assert observer.outcomes.count("ok") == len(sizes)
    assert all(size <= cfg.max_batch_size for size, _ in observer.batches)
    assert sum(waits for _, waits in observer.batches) == len(sizes)  # one queue-wait observation per job
    assert any(size > 1 for size, _ in observer.batches)  # peers of one bucket share a forward


def test_worker_output_equals_whole_image_inference_for_identity() -> None:
    cfg = settings()
    data = png(150, 70, seed=3)

    async def scenario() -> list[JobResult]:
        queue = MemoryQueue(max_length=4)
        jobs = await submit_all(queue, [data])
        return await with_worker(queue, cfg, IdentityNet(), lambda: results_of(queue, jobs))

    (result,) = asyncio.run(scenario())
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(result.image or b""))), np.asarray(Image.open(io.BytesIO(data)))
    )


def test_bad_jobs_fail_alone() -> None:
    cfg = settings()

    async def scenario() -> list[JobResult]:
        queue = MemoryQueue(max_length=8)
        good1, poison, good2 = await submit_all(
            queue, [png(20, 20, seed=1), png(20, 20, colour=(255, 0, 0)), png(20, 20, seed=2)]
        )
        undecodable = Job(b"not an image at all", width=20, height=20, tiles=1)  # as if its header had said 20×20
        resized = Job(png(24, 20, seed=3), width=20, height=20, tiles=1)  # the header lied, or another image came
        for job in (undecodable, resized):
            await queue.submit(job)
        jobs = [good1, undecodable, poison, resized, good2]
        return await with_worker(queue, cfg, FailsOnRed(), lambda: results_of(queue, jobs))

    good1, undecodable, poison, resized, good2 = asyncio.run(scenario())
    assert good1.ok and good2.ok
    assert not undecodable.ok and undecodable.error_status == 415
    assert not poison.ok and poison.error_status == 500 and "breaks the model" in poison.error
    assert not resized.ok and resized.error_status == 422
    assert resized.error == "the image decodes to 24x20 pixels, but its header says 20x20"


def test_the_compute_budget_is_checked_from_the_size_on_the_job() -> None:
    cfg = settings(max_compute_pixels=64 * 64)

    async def scenario() -> list[JobResult]:
        queue = MemoryQueue(max_length=4)
        small, large = await submit_all(queue, [png(20, 20), png(200, 20)])
        return await with_worker(queue, cfg, TinyNet(), lambda: results_of(queue, [small, large]))

    small, large = asyncio.run(scenario())
    assert small.ok
    assert not large.ok and large.error_status == 413 and "pixels of model work" in large.error


def test_cancelled_and_expired_jobs_are_skipped() -> None:
    cfg = settings()
    observer = RecordingObserver()

    async def scenario() -> tuple[list[JobResult], int]:
        queue = MemoryQueue(max_length=8)
        keep, cancelled = await submit_all(queue, [png(8, 8), png(8, 8)])
        expired = await probed_job(png(8, 8), deadline=0.0)
        await queue.submit(expired)
        await queue.cancel(cancelled.id)

        async def body() -> list[JobResult]:
            return await results_of(queue, [keep, expired])

        results = await with_worker(queue, cfg, TinyNet(), body, observer)
        return results, await queue.length()

    (kept, expired_result), length = asyncio.run(scenario())
    assert kept.ok
    assert not expired_result.ok and expired_result.error_status == 504
    assert sorted(observer.outcomes) == ["expired", "ok"]
    assert length == 0


def test_stop_drains_jobs_in_hand() -> None:
    cfg = settings(max_batch_wait_ms=50)

    async def scenario() -> JobResult:
        queue = MemoryQueue(max_length=4)
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_worker(queue, cfg, ready=ready, stop=stop, runner=Runner(TinyNet(), "cpu")))
        await ready.wait()
        (job,) = await submit_all(queue, [png(40, 40)])
        await asyncio.sleep(0.02)  # taken, still collecting peers
        stop.set()
        await asyncio.wait_for(task, 30)
        return await queue.wait_result(job.id, 0.1)

    assert asyncio.run(scenario()).ok


def test_loading_warm_up_and_every_forward_run_on_one_thread_off_the_event_loop(
    tiny_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One OpenMP team per worker process (``model.openmp``): the artifact's load, the warm-up, the forwards, the
    decoding and the encoding all run on the worker's model thread, none on the event loop's."""
    threads: dict[str, set[int]] = {"load": set(), "forward": set(), "decode": set(), "encode": set()}
    load, run_items = Runner.from_artifact.__func__, Runner.run_items  # type: ignore[attr-defined]
    decode, encode = codec.decode_image, codec.encode_image

    def recorded(kind: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            threads[kind].add(threading.get_ident())
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(Runner, "from_artifact", classmethod(recorded("load", load)))
    monkeypatch.setattr(Runner, "run_items", recorded("forward", run_items))
    monkeypatch.setattr(codec, "decode_image", recorded("decode", decode))
    monkeypatch.setattr(codec, "encode_image", recorded("encode", encode))
    cfg = model_settings(tiny_model, tile_size=64, tile_overlap=8)

    async def scenario() -> tuple[list[JobResult], int]:
        queue = MemoryQueue(max_length=8)
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_worker(queue, cfg, ready=ready, stop=stop, observer=NullObserver()))
        await asyncio.wait_for(ready.wait(), 60)
        busy = asyncio.Event()

        async def api_probes() -> None:  # in embedded mode the API's probes share the default executor
            while not busy.is_set():
                await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.005) for _ in range(3)))

        probes = asyncio.create_task(api_probes())
        jobs = await submit_all(queue, [png(150, 70, seed=seed) for seed in range(4)])
        results = await results_of(queue, jobs)
        busy.set()
        await probes
        stop.set()
        await asyncio.wait_for(task, 30)
        return results, threading.get_ident()

    results, loop_thread = asyncio.run(scenario())
    assert all(result.ok for result in results)
    assert all(threads[kind] for kind in threads), threads  # each kind of work was seen
    (model_thread,) = set().union(*threads.values())
    assert model_thread != loop_thread


def test_results_name_the_licence_the_artifact_records(tiny_model: tuple[Path, Path], tmp_path: Path) -> None:
    """The weights' licence as the export recorded it, in every result; ``unknown`` for an artifact without one."""
    from model.export import export_pipeline

    runner = Runner.from_artifact(tiny_model[1], "cpu", "float32")
    assert runner.info["licence"] == "MIT"  # the tiny checkpoint records none: the project's own

    async def scenario() -> JobResult:
        queue, ready, stop = MemoryQueue(max_length=8), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_worker(queue, settings(), ready=ready, stop=stop, runner=runner, observer=NullObserver())
        )
        await asyncio.wait_for(ready.wait(), 30)
        (result,) = await results_of(queue, await submit_all(queue, [png(40, 30)]))
        stop.set()
        await asyncio.wait_for(task, 30)
        return result

    assert asyncio.run(scenario()).model == runner.info
    unrecorded = export_pipeline(TinyNet(), tmp_path / "unrecorded.ts.pt")
    assert Runner.from_artifact(unrecorded, "cpu", "float32").info["licence"] == "unknown"


def test_run_items_isolates_the_failing_item() -> None:
    runner = Runner(FailsOnRed(), "cpu")
    items = [np.full((16, 16, 3), 0.5, np.float32) for _ in range(5)]
    items[3] = np.zeros((16, 16, 3), np.float32)
    items[3][..., 0] = 1.0
    outputs = runner.run_items(items)
    assert [isinstance(o, Exception) for o in outputs] == [False, False, False, True, False]


def test_tensor_round_trip() -> None:
    batch = np.random.default_rng(0).random((2, 5, 7, 3), dtype=np.float32)
    tensor = to_tensor(batch)
    assert tuple(tensor.shape) == (2, 3, 5, 7)
    np.testing.assert_array_equal(from_tensor(tensor), batch)


def test_out_of_memory_splits_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(IdentityNet(), "cpu")
    sizes: list[int] = []
    forward = runner.forward

    def limited(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    monkeypatch.setattr(runner, "forward", limited)
    outputs = runner.run_items([np.full((8, 8, 3), i / 10, np.float32) for i in range(5)])
    assert sizes == [5, 2, 3, 1, 2]
    for i, output in enumerate(outputs):
        assert not isinstance(output, Exception)
        np.testing.assert_allclose(output[0], i / 10)


def test_infer_image_matches_the_worker_tiling() -> None:
    image = np.random.default_rng(1).random((70, 150, 3), dtype=np.float32)
    dehazed, depth = infer_image(IdentityNet(), image, tile_size=64, tile_overlap=8, bucket_multiple=16)
    np.testing.assert_allclose(dehazed, image, atol=1e-5)
    assert depth.shape == (70, 150)
    whole, _ = infer_image(TinyNet(), image, tile_size=256, tile_overlap=8)
    tiled, _ = infer_image(TinyNet(), image, tile_size=64, tile_overlap=16)
    assert np.abs(whole - tiled).mean() < 0.01  # a 3×3 conv sees only 1 px across a seam


def test_model_with_wrong_output_shapes_is_reported() -> None:
    class Wrong(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[:, :1], x

    (output,) = Runner(Wrong(), "cpu").run_items([np.zeros((8, 8, 3), np.float32)])
    assert isinstance(output, ValueError)


# -- with the Redis Streams queue --------------------------------------------------------------------------------
def redis_queue(url: str, **overrides: Any) -> Any:
    from service.queue.redis_streams import RedisStreamsQueue

    options: dict[str, Any] = {"max_length": 16, "result_ttl_s": 60, "claim_idle_ms": 100, "heartbeat_s": 0.2}
    return RedisStreamsQueue(url, **{**options, **overrides})


@pytest.mark.redis
def test_worker_started_after_submission_picks_the_jobs_up(redis_url: str) -> None:
    cfg = settings()

    async def scenario() -> tuple[list[JobResult], int]:
        api, worker_queue = redis_queue(redis_url), redis_queue(redis_url)
        jobs = await submit_all(api, [png(30, 20, seed=i) for i in range(3)], want_depth=True, depth_colormap=True)
        results = await with_worker(worker_queue, cfg, TinyNet(), lambda: results_of(api, jobs))
        alive = await api.workers_alive()
        await api.close()
        await worker_queue.close()
        return results, alive

    results, alive = asyncio.run(scenario())
    assert all(r.ok and r.width == 30 and r.height == 20 for r in results)
    assert Image.open(io.BytesIO(results[0].depth or b"")).mode == "RGB"
    assert alive == 1  # its heartbeat key outlives the stop by a few intervals


@pytest.mark.redis
def test_worker_recovers_a_job_taken_by_a_dead_consumer(redis_url: str) -> None:
    cfg = settings()

    async def scenario() -> JobResult:
        api, dead, worker_queue = redis_queue(redis_url), redis_queue(redis_url), redis_queue(redis_url)
        (job,) = await submit_all(api, [png(16, 16)])
        assert len(await dead.take(1, block_ms=100)) == 1  # that worker dies without finishing
        result = await with_worker(worker_queue, cfg, TinyNet(), lambda: api.wait_result(job.id, 20))
        for queue in (api, dead, worker_queue):
            await queue.close()
        return result

    assert asyncio.run(scenario()).ok


@pytest.mark.redis
def test_worker_fails_a_poisoned_job_after_the_delivery_limit(redis_url: str) -> None:
    cfg = settings()
    observer = RecordingObserver()

    async def scenario() -> JobResult:
        api = redis_queue(redis_url, delivery_limit=1)
        dead = redis_queue(redis_url, delivery_limit=1)
        worker_queue = redis_queue(redis_url, delivery_limit=1)
        (job,) = await submit_all(api, [png(16, 16)])
        assert len(await dead.take(1, block_ms=100)) == 1  # delivery 1 crashed its worker
        result = await with_worker(worker_queue, cfg, TinyNet(), lambda: api.wait_result(job.id, 20), observer)
        for queue in (api, dead, worker_queue):
            await queue.close()
        return result

    result = asyncio.run(scenario())
    assert not result.ok and result.error_status == 500 and result.error == "job failed 1 times; giving up"
    assert observer.outcomes == ["poisoned"]
