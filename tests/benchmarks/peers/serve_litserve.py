"""LitServe: ``POST /dehaze`` with a multipart ``image``, the dehazed PNG back; with its batching when asked.

LitServe's own structure: one API-server process (uvicorn) hands each request to one inference worker process
(``workers_per_device=1`` on the CPU), where ``decode_request``, ``predict`` and ``encode_response`` run; the model
loads and warms in ``setup``. With ``--max-batch-size`` above 1, LitServe collects up to that many requests or
waits ``--batch-wait-ms`` (its ``batch_timeout``), and ``predict`` gets the list, all pieces of one shape sharing
forwards, as our worker batches.

    python -m tests.benchmarks.peers.serve_litserve --artifact model.ts.pt --port 8002 --threads 2 --max-batch-size 8
"""

# No ``from __future__ import annotations``: LitServe reads decode_request's annotation at run time, and a string
# "Request" would make it hand over the raw request (unpicklable) instead of the parsed form.
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import Request
from fastapi.responses import Response

from commands.allocator import tune_for_inference
from service.api.server_timing import server_timing
from tests.benchmarks.peers.dehazer import Dehazer, peer_arguments, start_process

API_PATH = "/dehaze"
Answer = tuple[bytes, dict[str, float]]
"""A PNG and the model's timings in milliseconds (``Dehazer.dehaze``)."""


class DehazeAPI(ls.LitAPI):
    """The LitAPI; ``artifact`` and ``threads`` travel with the instance to the worker process."""

    def __init__(self, artifact: Path, threads: int, max_batch_size: int, batch_wait_ms: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_wait_ms / 1000.0, api_path=API_PATH)
        self.artifact = artifact
        self.threads = threads
        self.dehazer: Dehazer | None = None

    def setup(self, device: str) -> None:
        """Load and warm the model in the worker process (spawned: the malloc settings are set again here)."""
        tune_for_inference()
        self.dehazer = Dehazer(self.artifact, self.threads, self.max_batch_size)
        self.dehazer.warm_up()

    def decode_request(self, request: Request) -> bytes:  # type: ignore[override]
        """The upload's bytes (LitServe parsed the form in the API process)."""
        upload: Any = request["image"]
        return upload if isinstance(upload, bytes) else upload.file.read()

    def batch(self, inputs: list[bytes]) -> list[bytes]:  # type: ignore[override]
        """The uploads as they are (LitServe's default would try to stack arrays)."""
        return inputs

    def predict(self, x: Any) -> Any:
        """One (PNG, timings) per upload (a list when batching; the batch's timings for each of its uploads)."""
        assert self.dehazer is not None
        pngs, timings = self.dehazer.dehaze(x if self.max_batch_size > 1 else [x])
        answers = [(png, timings) for png in pngs]
        return answers if self.max_batch_size > 1 else answers[0]

    def unbatch(self, output: list[Answer]) -> list[Answer]:  # type: ignore[override]
        """One answer per request."""
        return output

    def encode_response(self, output: Answer) -> Response:  # type: ignore[override]
        """The PNG as the response body, the model's times in ``Server-Timing``."""
        png, timings = output
        return Response(content=png, media_type="image/png", headers=server_timing(timings))


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    args = peer_arguments(__doc__.split("\n")[0]).parse_args(argv)
    start_process()
    api = DehazeAPI(args.artifact, args.threads, args.max_batch_size, args.batch_wait_ms)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=False)
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
