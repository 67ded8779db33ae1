"""What the lifespan opens and the routes use, kept on ``app.state.services`` (nothing is created at import)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from model.licence import UNKNOWN_LICENCE
from service.config import Settings
from service.density import DensityScorer
from service.queue.base import JobQueue

__all__ = ["Services"]


@dataclass
class Services:
    """The app's long-lived objects.

    Attributes:
        settings: the validated settings.
        queue: the job queue (in-process or Redis).
        density: the FADE process pool.
        worker_ready: set once the in-process worker has loaded and warmed the model (embedded mode only).
        worker_task: the in-process worker (embedded mode only).
        worker_error: why the in-process worker stopped, if it did.
        compute_budget: the pixels of model work one request may cost (``Settings.compute_budget_on`` for the
            worker's device: the embedded worker's, else the configured device's, CUDA's for ``auto``; a Redis
            worker on another device applies its own budget as well).
        model: ``name``, ``version`` and ``licence`` of the model this process last saw served: the embedded
            worker's once it has loaded, and the model of every result since (an API on Redis learns it from its
            first answer; None until then). The API never loads the model itself.
    """

    settings: Settings
    queue: JobQueue
    density: DensityScorer
    compute_budget: int = 0
    worker_ready: asyncio.Event | None = None
    worker_task: asyncio.Task[None] | None = None
    worker_error: str | None = field(default=None)
    model: dict[str, str] | None = None

    def note_model(self, variant: str | None, version: str | None, licence: str | None) -> None:
        """Record the model of a result or of the loaded worker (ignored when it does not name a variant).

        A result without a licence (from a worker older than the field) records it as unknown.
        """
        if variant:
            self.model = {"name": variant, "version": version or "", "licence": licence or UNKNOWN_LICENCE}

    @property
    def embedded(self) -> bool:
        """True when the worker runs inside this process."""
        return self.worker_task is not None
