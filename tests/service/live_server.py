"""Helpers for the API tests: a tiny model artifact, a real uvicorn server over TCP, a Redis worker thread, images."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from service.config import Settings
from service.main import create_app
from tests.processes import free_port

__all__ = [
    "free_port",
    "image_bytes",
    "live_server",
    "model_settings",
    "redis_worker",
    "tiny_model",
    "tiny_weights",
    "wait_until",
]


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def image_bytes(width: int, height: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A textured (so FADE is defined) hazy-looking RGB image of the given size, encoded."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 7) % 256, (ys * 5) % 256, (xs + ys) % 256], axis=-1).astype(np.float32)
    noisy = 0.5 * base + 0.3 * rng.integers(0, 256, size=base.shape) + 60
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a random-initialised ``dcmpnet_tiny``, written once per test session."""
    from model.checkpoint import save_checkpoint
    from model.pipeline import build_pipeline

    weights = tmp_path_factory.mktemp("tiny_weights") / "dcmpnet_tiny.pt"  # the worker names the variant by file
    pipeline = build_pipeline("dcmpnet_tiny").eval()
    save_checkpoint(weights, pipeline.phi, pipeline.psi, "dcmpnet_tiny", {"version": "test"})
    return weights


@pytest.fixture(scope="session")
def tiny_model(tiny_weights: Path) -> tuple[Path, Path]:
    """(weights, artifact): the tiny checkpoint and its TorchScript export, made once per test session."""
    from model.export import ensure_artifact

    artifact = tiny_weights.with_name("dcmpnet_tiny.ts.pt")
    return tiny_weights, Path(ensure_artifact(tiny_weights, artifact))


def model_settings(tiny_model: tuple[Path, Path], **overrides: object) -> Settings:
    """Settings serving the tiny model on CPU in float32 with one torch thread, plus ``overrides``.

    float32, not ``auto``: the tests compare served pixels with the float32 pipeline's, and ``auto`` is bfloat16 on
    some CPUs only; the bfloat16 path has its own tests (``tests/service/test_precision.py``).
    """
    weights, artifact = tiny_model
    values: dict[str, object] = {
        "weights": weights,
        "artifact": artifact,
        "device": "cpu",
        "dtype": "float32",
        "torch_threads": 1,
        "tile_size": 128,
        "tile_overlap": 16,
        "max_batch_size": 4,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def live_server(settings: Settings, wait_ready: bool = True, timeout_s: float = 60) -> Iterator[str]:
    """``create_app(settings)`` served by a real uvicorn server on a free port in a thread; yields its URL."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, timeout_s, "uvicorn to start")
        if wait_ready:
            wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, timeout_s, "/readyz")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextlib.contextmanager
def redis_worker(settings: Settings) -> Iterator[None]:
    """The Redis batching worker (``service.worker.loop.run_worker``) on its own event loop in a thread."""
    from service.queue.factory import make_queue
    from service.worker.loop import run_worker

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        queue = make_queue(settings)
        try:
            await run_worker(queue, settings, ready=asyncio.Event(), stop=stop)
        finally:
            await queue.close()

    def target() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported when the block ends
            failure.append(error)

    thread = threading.Thread(target=target, name="redis-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
        loop.close()
        if failure:
            raise AssertionError(f"the worker failed: {failure[0]!r}") from failure[0]
