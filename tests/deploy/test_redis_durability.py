"""The Kubernetes Redis keeps every accepted job across a crash: a real redis-server with the manifest's redis.conf.

The redis.conf of deploy/k8s (ConfigMap ``redis-config``: ``appendonly yes``, ``appendfsync always``) is started in a
temporary folder; jobs are submitted through the service's own queue, some taken by a worker (pending in the
consumer group) and one finished; then redis-server is killed with SIGKILL, right after the last reply, and started
again on the same folder. Every accepted job must still be there with its payload, the taken ones still pending
for their consumer (so another worker reclaims them), the finished one's result stored. The same scenario without
the append-only file loses everything, which shows that the check can fail.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
import redis

from service.queue.base import Job, JobResult
from service.queue.redis_streams import CONSUMER_GROUP, RedisStreamsQueue, stream_key
from tests.deploy.k8s_manifests import find, render
from tests.deploy.redis_server import base_redis_conf, redis_process, write_conf
from tests.service.live_server import free_port

pytestmark = pytest.mark.redis

STREAM = stream_key("dehaze")


def manifest_conf(folder: Path, **changes: str) -> Path:
    """The rendered manifest's redis.conf written to ``folder`` (``dir`` = ``folder``), with ``changes`` applied."""
    text = find(render("gpu"), "ConfigMap", "redis-config")["data"]["redis.conf"]
    assert text == base_redis_conf()  # no overlay changes it
    return write_conf(text, folder, **changes)


async def accept_take_finish(url: str) -> tuple[list[str], list[str], str, str]:
    """Submit 5 jobs, take 2 as consumer ``w1`` and finish 1: (job ids, payloads, finished id, w1's consumer name)."""
    api, worker = RedisStreamsQueue(url, max_length=64), RedisStreamsQueue(url, consumer="w1")
    jobs = [Job(payload=f"image-{index}".encode() * 1000, deadline=1e12) for index in range(5)]
    for job in jobs:
        await api.submit(job)
    taken = await worker.take(2, block_ms=100)
    assert len(taken) == 2
    await worker.finish(JobResult(job_id=taken[0].id, image=b"result", image_media_type="image/png"))
    await api.close()
    await worker.close()
    return [job.id for job in jobs], [job.payload.decode() for job in jobs], taken[0].id, worker.consumer


def queue_state(client: redis.Redis) -> dict[str, Any]:
    """What survives: stream length, pending entries per consumer, the group's lag, and the payload keys."""
    if not client.exists(STREAM):
        return {"length": 0, "pending": {}, "lag": None, "payloads": set()}
    summary: Any = client.xpending(STREAM, CONSUMER_GROUP)
    (group,) = client.xinfo_groups(STREAM)
    return {
        "length": client.xlen(STREAM),
        "pending": {c["name"].decode(): int(c["pending"]) for c in summary["consumers"] or []},
        "lag": group["lag"],
        "payloads": {key.decode().rsplit(":", 1)[1] for key in client.scan_iter(match="dehaze:payload:*")},
    }


def test_accepted_and_pending_jobs_survive_kill_9_with_the_manifest_config(tmp_path: Path) -> None:
    conf, port = manifest_conf(tmp_path), free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with redis_process(conf, port) as server:
        ids, payloads, finished, consumer = asyncio.run(accept_take_finish(url))
        server.send_signal(signal.SIGKILL)  # no shutdown, no final fsync: only what was on disk at each reply
        server.wait(timeout=10)
    assert (tmp_path / "appendonlydir").is_dir()
    with redis_process(conf, port):
        client = redis.Redis.from_url(url)
        state = queue_state(client)
        assert state == {"length": 4, "pending": {consumer: 1}, "lag": 3, "payloads": set(ids) - {finished}}
        assert client.llen(f"dehaze:result:{finished}") == 1  # the stored result survived too
        assert client.get(f"dehaze:payload:{ids[-1]}") == payloads[-1].encode()

        async def recover() -> set[str]:
            """A new worker reclaims the dead consumer's job and takes the waiting ones: nothing is lost."""
            worker = RedisStreamsQueue(url, consumer="w2", claim_idle_ms=100)
            await asyncio.sleep(0.2)
            served: set[str] = set()
            for _ in range(20):
                for job in await worker.take(4, block_ms=50):
                    assert job.payload == payloads[ids.index(job.id)].encode()
                    served.add(job.id)
                    await worker.finish(JobResult(job_id=job.id, image=b"r"))
                if len(served) == 4:
                    break
            await worker.close()
            return served

        assert asyncio.run(recover()) == set(ids) - {finished}
        assert queue_state(client)["length"] == 0
        client.close()


def test_without_the_append_only_file_the_same_crash_loses_the_queue(tmp_path: Path) -> None:
    """The control: the check above can fail. Redis's own defaults here (no AOF, no snapshot) lose every job."""
    conf, port = manifest_conf(tmp_path, appendonly="no"), free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with redis_process(conf, port) as server:
        asyncio.run(accept_take_finish(url))
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    with redis_process(conf, port):
        client = redis.Redis.from_url(url)
        assert queue_state(client)["length"] == 0
        client.close()
