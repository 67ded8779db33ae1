"""A plain FastAPI endpoint: ``POST /dehaze`` with a multipart ``image``, the dehazed PNG back.

Written as one would without a serving framework: the model loads and warms in the lifespan, and every request
runs decode + forward + encode on one dedicated thread (one model call at a time, as our single worker does, so
that concurrent requests do not split the torch threads between them), while the event loop reads uploads and
writes answers. uvicorn with its defaults (uvloop and httptools when installed), one process.

    python -m tests.benchmarks.peers.serve_fastapi --artifact model.ts.pt --port 8001 --threads 2
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import Response

from service.api.server_timing import server_timing
from tests.benchmarks.peers.dehazer import Dehazer, peer_arguments, start_process


def build_app(artifact: Path, threads: int) -> FastAPI:
    """The app; the model is loaded and warmed on the model thread before the server accepts connections."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    model: list[Dehazer] = []

    def load() -> None:
        dehazer = Dehazer(artifact, threads)
        dehazer.warm_up()
        model.append(dehazer)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(executor, load)
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/dehaze")
    async def dehaze(image: UploadFile = File(...)) -> Response:  # noqa: B008 (FastAPI's declaration style)
        started = time.perf_counter()
        payload = await image.read()
        (png,), timings = await asyncio.get_running_loop().run_in_executor(executor, model[0].dehaze, [payload])
        return Response(content=png, media_type="image/png", headers=server_timing(timings, started))

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    args = peer_arguments(__doc__.split("\n")[0]).parse_args(argv)
    start_process()
    uvicorn.run(build_app(args.artifact, args.threads), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
