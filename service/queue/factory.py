"""Choose the queue backend from the settings."""

from __future__ import annotations

from service.config import Settings
from service.queue.base import JobQueue

__all__ = ["make_queue"]


def make_queue(settings: Settings) -> JobQueue:
    """The Redis Streams queue when ``settings.redis_url`` is set, else the in-process queue.

    Nothing is connected here: the Redis client connects on first use and reconnects by itself.
    """
    if settings.redis_url:
        from service.queue.redis_streams import RedisStreamsQueue  # imported on use: embedded mode needs no redis

        return RedisStreamsQueue.from_settings(settings)
    from service.queue.memory import MemoryQueue

    return MemoryQueue(
        max_length=settings.max_queue_length, result_ttl_s=settings.result_ttl_s, heartbeat_s=settings.heartbeat_s
    )
