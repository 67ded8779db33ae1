"""NVIDIA Triton through PyTriton: model ``dehaze``, input ``image`` (BYTES, the PNG upload), output ``png`` (BYTES).

PyTriton's structure: the Triton server process (C++, HTTP on ``--port``) runs the model through its Python
backend stub, which hands each batch to the inference callable in this process; the model loads and warms here
before the model is bound. Triton's dynamic batcher collects up to ``--max-batch-size`` requests or waits
``--batch-wait-ms``; the callable gets the batch, all pieces of one shape sharing forwards, as our worker batches.
Clients speak Triton's HTTP protocol (KServe v2) with the binary-tensor extension, so the upload travels as raw
bytes, not as JSON.

PyTriton 0.7 needs numpy < 2 while the project needs numpy >= 2.2 (fade-python), so this program runs from its own
virtual environment (``python -m venv --system-site-packages .venv-triton``; see tests/benchmarks/README.md). The
Python-backend stub links the system ``libpython3.11``; with a pyenv Python, ``LD_LIBRARY_PATH`` must name that
Python's ``lib`` folder, which the benchmark sets.

    .venv-triton/bin/python -m tests.benchmarks.peers.serve_pytriton --artifact model.ts.pt --port 8003 --threads 2
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from types import FrameType

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from tests.benchmarks.peers.dehazer import Dehazer, peer_arguments, start_process

MODEL = "dehaze"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: ``Triton.serve`` then stops the server and cleans its workspace."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = peer_arguments(__doc__.split("\n")[0])
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args(argv)
    start_process()
    signal.signal(signal.SIGTERM, _interrupt)
    dehazer = Dehazer(args.artifact, args.threads, args.max_batch_size)
    dehazer.warm_up()

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        pngs, _ = dehazer.dehaze([bytes(row[0]) for row in image])  # Triton answers carry no Server-Timing
        return {"png": np.array([[png] for png in pngs], dtype=np.object_)}

    config = TritonConfig(
        http_address=args.host,
        http_port=args.port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=round(args.batch_wait_ms * 1000))
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="png", dtype=bytes, shape=(1,))],
            config=ModelConfig(max_batch_size=max(1, args.max_batch_size), batcher=batcher),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
