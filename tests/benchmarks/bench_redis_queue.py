"""The Redis queue at our job sizes: commands per job, Redis CPU and throughput, memory per queued job, AOF bytes.

``python -m tests.benchmarks.bench_redis_queue`` starts private ``redis-server`` instances with the Kubernetes
manifest's settings (deploy/k8s ConfigMap ``redis-config``: AOF on, ``noeviction``; ``appendfsync`` as given by
``--fsync``) and drives them with the service's own queue code (``RedisStreamsQueue``), no model:

* **commands per job**: jobs go through the real ``Worker`` (a stand-in identity model, so only the queue and the
  codecs work) and the API side's submit and wait; ``INFO commandstats`` after ``CONFIG RESETSTAT`` counts every
  command Redis executed, those run inside the submission script included. Heartbeats are per worker and time,
  not per job, and are reported apart.
* per payload size (a 620x460 PNG upload, a 1920x1080 PNG, the 25 MiB upload limit) and fsync policy:
  **memory per queued job** (``MEMORY USAGE`` of its payload and fallback keys plus the stream's growth, and
  ``used_memory`` growth, which also counts client and AOF buffers), so the queue's memory at
  ``DEHAZE_MAX_QUEUE_LENGTH``; and **throughput**: ``--clients`` API coroutines submit and wait, one worker
  coroutine takes and stores a result as large as the upload (a PNG answer is about the size of a PNG upload).
  Reported: jobs/s and MB/s through Redis, Redis CPU seconds per job (``INFO cpu``: what bounds one Redis core,
  and unlike the wall times not inflated by other processes on the machine) and append-only-file bytes per job.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
from PIL import Image

from service.config import Settings
from service.queue import redis_streams
from service.queue.base import Job, JobResult, QueueUnavailableError
from service.queue.redis_streams import RedisStreamsQueue
from service.worker.loop import Worker
from service.worker.runner import Runner
from tests.benchmarks.common import (
    DATA_ROOT,
    SOTS_FOLDER,
    Column,
    format_table,
    loadavg,
    print_targets,
    target,
    write_report,
)
from tests.deploy.redis_server import base_redis_conf, redis_process, write_conf
from tests.service.live_server import free_port

__all__ = ["main"]

logger = logging.getLogger(__name__)

MAX_UPLOAD = Settings.model_fields["max_upload_bytes"].default
MAX_QUEUE = Settings.model_fields["max_queue_length"].default
SIZES = ("sots", "1080p", "max")


def _sots_photo(data: Path) -> Image.Image:
    """The first hazy SOTS image (620x460), or a textured stand-in of that size when the data set is absent."""
    folder = data / SOTS_FOLDER / "hazy"
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    if files:
        return Image.open(files[0]).convert("RGB")
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:460, 0:620]
    base = np.stack([(xs * 7) % 256, (ys * 5) % 256, (xs + ys) % 256], axis=-1) * 0.5 + 60
    return Image.fromarray(np.clip(base + rng.integers(0, 60, base.shape), 0, 255).astype(np.uint8))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def payloads(data: Path, sizes: list[str]) -> dict[str, bytes]:
    """Upload bytes per size name: the SOTS photo as PNG, the same photo resized to 1920x1080 as PNG, and
    ``DEHAZE_MAX_UPLOAD_BYTES`` of random bytes (what a PNG at the limit is: incompressible)."""
    photo = _sots_photo(data)
    made = {
        "sots": lambda: _png(photo),
        "1080p": lambda: _png(photo.resize((1920, 1080), Image.Resampling.BICUBIC)),
        "max": lambda: np.random.default_rng(1).integers(0, 256, MAX_UPLOAD, dtype=np.uint8).tobytes(),
    }
    return {name: made[name]() for name in sizes}


@contextmanager
def private_redis(fsync: str) -> Iterator[tuple[str, redis.Redis, Path]]:
    """A redis-server with the manifest's settings in a fresh folder: (URL, client, folder)."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        folder, port = Path(tmp), free_port()
        with redis_process(write_conf(base_redis_conf(), folder, appendfsync=fsync), port):
            client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
            client.config_set("auto-aof-rewrite-percentage", 0)  # no rewrite mid-run: the AOF growth is per job
            try:
                yield f"redis://127.0.0.1:{port}/0", client, folder
            finally:
                client.close()


def _redis_cpu_s(client: redis.Redis) -> float:
    cpu: Any = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _aof_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.aof"))


def _identity_runner() -> Runner:
    """A stand-in model: the input comes back as the dehazed image, its first channel as the depth."""
    return Runner(lambda x: (x, x[:, :1]), device="cpu", info={"variant": "identity", "version": "bench"})


async def count_commands(url: str, client: redis.Redis, image: bytes, jobs: int) -> dict[str, Any]:
    """Commands Redis executes per job: API submit + wait, the real Worker's collect + process (one tile each)."""
    settings = Settings(redis_url=url, max_batch_wait_ms=0)
    api, queue = RedisStreamsQueue.from_settings(settings), RedisStreamsQueue.from_settings(settings)
    worker = Worker(queue, settings, _identity_runner())
    width, height = Image.open(io.BytesIO(image)).size
    first = Job(payload=image, deadline=time.time() + 60, width=width, height=height)
    await api.submit(first)  # connections, the script and the group exist before counting starts
    await worker.process(await worker.collect())
    await api.wait_result(first.id, 30)
    client.config_resetstat()
    for _ in range(jobs):
        job = Job(payload=image, deadline=time.time() + 60, width=width, height=height)
        await api.submit(job)
        taken: list[Job] = []
        while not taken:
            taken = await worker.collect()
        await worker.process(taken)
        result = await api.wait_result(job.id, 30)
        assert result.ok, result.error
    stats: Any = client.info("commandstats")
    await queue.heartbeat("bench")  # one heartbeat, counted apart
    beat: Any = client.info("commandstats")
    await api.close()
    await queue.close()
    ours = {name: v for name, v in stats.items() if not name.startswith(("cmdstat_config", "cmdstat_info"))}
    per_job = {name.removeprefix("cmdstat_"): int(v["calls"]) / jobs for name, v in ours.items()}
    heartbeat = {
        name.removeprefix("cmdstat_"): int(v["calls"]) - int(stats.get(name, {"calls": 0})["calls"])
        for name, v in beat.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    }
    scripted = {"eval", "evalsha"}
    return {
        "jobs": jobs,
        "per_job": dict(sorted(per_job.items())),
        "total_per_job": sum(per_job.values()),
        "commands_outside_scripts_per_job": sum(v for k, v in per_job.items() if k not in scripted),
        "heartbeat": {k: v for k, v in heartbeat.items() if v},
    }


async def fill(url: str, client: redis.Redis, payload: bytes, jobs: int) -> dict[str, float]:
    """Memory of ``jobs`` queued jobs (no worker), per job: the keys' own size (``MEMORY USAGE`` of the payload and
    fallback keys plus the stream's growth) and Redis's ``used_memory`` growth (which also counts buffers)."""
    api = RedisStreamsQueue(url, max_length=10_000)
    await api.submit(Job(payload=b"x", deadline=1e12))
    stream = "dehaze:jobs"
    before, stream_before = int(client.info("memory")["used_memory"]), int(client.memory_usage(stream) or 0)
    ids = []
    for _ in range(jobs):
        job = Job(payload=payload, deadline=time.time() + 120, width=620, height=460)
        await api.submit(job)
        ids.append(job.id)
    after = int(client.info("memory")["used_memory"])
    keys = sum(
        int(client.memory_usage(f"dehaze:{kind}:{job_id}") or 0) for job_id in ids for kind in ("payload", "fallback")
    )
    keys += int(client.memory_usage(stream) or 0) - stream_before
    await api.close()
    return {"bytes_per_job": keys / jobs, "used_memory_per_job": (after - before) / jobs}


async def throughput(url: str, client: redis.Redis, folder: Path, payload: bytes, jobs: int, clients: int) -> dict:
    """``jobs`` jobs through Redis with ``clients`` concurrent API requests and one worker storing equal results."""
    api = RedisStreamsQueue(url, max_length=10_000)
    worker = RedisStreamsQueue(url, max_length=10_000)
    latencies: list[float] = []
    pending = list(range(jobs))

    unavailable = 0

    async def request() -> None:
        """Submit and wait; a QueueUnavailableError (the API's 503) is counted and the request sent again."""
        nonlocal unavailable
        while pending:
            pending.pop()
            job = Job(payload=payload, deadline=time.time() + 600)
            started = time.perf_counter()
            while True:
                try:
                    await api.submit(job)
                    break
                except QueueUnavailableError:
                    unavailable += 1
                    await asyncio.sleep(1.0)
            result = await api.wait_result(job.id, 600)
            latencies.append(time.perf_counter() - started)
            assert result.ok

    async def serve() -> None:
        done = 0
        while done < jobs:
            for job in await worker.take(8, block_ms=100):
                await worker.finish(JobResult(job_id=job.id, image=job.payload, image_media_type="image/png"))
                done += 1

    await api.submit(Job(payload=b"x", deadline=1e12))  # connect, load the script, create the group
    (warm,) = await worker.take(1, block_ms=1000)
    await worker.finish(JobResult(job_id=warm.id))
    await api.wait_result(warm.id, 10)
    cpu, aof, started = _redis_cpu_s(client), _aof_bytes(folder), time.perf_counter()
    await asyncio.gather(serve(), *(request() for _ in range(clients)))
    seconds = time.perf_counter() - started
    redis_cpu = _redis_cpu_s(client) - cpu
    await api.close()
    await worker.close()
    return {
        "jobs": jobs,
        "jobs_per_s": jobs / seconds,
        "mb_per_s": 2 * jobs * len(payload) / seconds / 1e6,  # upload in, result out
        "redis_cpu_ms_per_job": 1000.0 * redis_cpu / jobs,
        "redis_cpu_bound_jobs_per_s": jobs / redis_cpu if redis_cpu > 0 else None,
        "aof_bytes_per_job": (_aof_bytes(folder) - aof) / jobs,
        "p50_ms": 1000.0 * statistics.median(latencies),
        "unavailable": unavailable,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES), help="payload sizes")
    parser.add_argument("--fsync", nargs="+", choices=("always", "everysec"), default=["always", "everysec"])
    parser.add_argument("--jobs", type=int, nargs=3, default=[200, 40, 6], help="jobs per size: sots 1080p max")
    parser.add_argument("--count-jobs", type=int, default=50, help="jobs for the command count (default 50)")
    parser.add_argument("--fill-jobs", type=int, default=8, help="queued jobs for the memory figure (default 8)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent API requests (default 4)")
    parser.add_argument(
        "--command-timeout",
        type=float,
        default=60.0,
        help="socket timeout of the queue's commands (the service uses 5 s; a 25 MiB command on a busy machine "
        "can take longer, which this benchmark measures rather than fails on)",
    )
    parser.add_argument("--data", type=Path, default=DATA_ROOT, help="datasets folder (default ../shared/datasets)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/redis_queue.json"), help="JSON to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("service").setLevel(logging.WARNING)  # no line per batch
    redis_streams._COMMAND_TIMEOUT_S = args.command_timeout  # read when each queue's clients are made
    machine = {"cpu_cores": os.cpu_count(), "loadavg_start": loadavg(), "redis": "manifest redis.conf"}
    data = payloads(args.data, args.sizes)
    jobs_for = dict(zip(SIZES, args.jobs, strict=True))

    with private_redis(args.fsync[0]) as (url, client, _):
        logger.info("counting commands per job")
        version = client.info("server")["redis_version"]
        small = _png(_sots_photo(args.data).resize((64, 48)))
        counts = asyncio.run(count_commands(url, client, small, args.count_jobs))
    rows: list[dict[str, Any]] = []
    for fsync in args.fsync:
        for name, payload in data.items():
            logger.info("%s, appendfsync %s: memory and throughput", name, fsync)
            with private_redis(fsync) as (url, client, folder):
                memory = asyncio.run(fill(url, client, payload, args.fill_jobs))
                client.flushall()
                flow = asyncio.run(throughput(url, client, folder, payload, jobs_for[name], args.clients))
            rows.append(
                {
                    "size": name,
                    "fsync": fsync,
                    "payload_bytes": len(payload),
                    **memory,
                    "queue_mib_at_max_length": MAX_QUEUE * memory["bytes_per_job"] / 2**20,
                    **flow,
                }
            )
    per_command = ", ".join(f"{k} {v:g}" for k, v in counts["per_job"].items())
    print(f"Redis {version}: {counts['total_per_job']:g} commands per job ({per_command})")
    print(f"heartbeat (per worker every DEHAZE_HEARTBEAT_S): {counts['heartbeat']}\n")
    columns = [
        Column("size", "size"),
        Column("fsync", "fsync"),
        Column("payload_bytes", "payload B", ",d"),
        Column("bytes_per_job", "keys B/job", ",.0f"),
        Column("used_memory_per_job", "used_memory B/job", ",.0f"),
        Column("queue_mib_at_max_length", f"queue MiB @{MAX_QUEUE}", ",.1f"),
        Column("jobs_per_s", "jobs/s", ".1f"),
        Column("mb_per_s", "MB/s", ".1f"),
        Column("redis_cpu_ms_per_job", "Redis CPU ms/job", ".2f"),
        Column("redis_cpu_bound_jobs_per_s", "CPU-bound jobs/s", ",.0f"),
        Column("aof_bytes_per_job", "AOF B/job", ",.0f"),
        Column("p50_ms", "p50 ms", ".1f"),
        Column("unavailable", "503s", "d"),
    ]
    print(format_table(rows, columns, f"Queue without a model, {args.clients} clients, one worker"))
    largest = max((r for r in rows if r["size"] == "max"), key=lambda r: r["queue_mib_at_max_length"], default=None)
    targets = [
        target(
            "queue at max length and max upload fits maxmemory 2gb (MiB)",
            largest["queue_mib_at_max_length"] if largest else None,
            "<=",
            2048.0,
        )
    ]
    print_targets(targets)
    write_report(
        args.out,
        "redis_queue",
        machine,
        {"sizes": args.sizes, "fsync": args.fsync, "jobs": jobs_for, "clients": args.clients, "redis": version},
        {"commands": counts, "rows": rows},
        targets,
        ["wall-clock figures share the machine with the benchmark process; Redis CPU per job does not"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
