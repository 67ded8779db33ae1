"""Peer servers for ``bench_peers``: the same TorchScript artifact behind other serving stacks.

Each module is one server program, started by the benchmark as ``python -m tests.benchmarks.peers.<module>``:
``serve_fastapi`` (a plain FastAPI endpoint), ``serve_litserve`` (LitServe, with or without its batching) and
``serve_pytriton`` (NVIDIA Triton through PyTriton). They share the model side, :mod:`.dehazer`, so every server
decodes, pads, runs and encodes exactly as our worker does and the comparison is of the serving stacks alone.
"""
