"""Our service against other ways of serving the same TorchScript artifact, with the same clients, side by side.

    python -m tests.benchmarks.bench_peers
    python -m tests.benchmarks.bench_peers --quick      # CI: tiny model, 1 and 2 clients, about a second per cell

Servers (``--servers``; each one a child process on 127.0.0.1, all running at once, started per model):
    ``ours-embedded`` ``dehaze serve``; ``ours-redis1`` redis-server + ``dehaze api`` + one ``dehaze worker``;
    ``fastapi`` a plain FastAPI endpoint; ``litserve`` LitServe without batching; ``litserve-batch`` LitServe with
    its batching; ``pytriton`` Triton through PyTriton with its dynamic batcher. The peers' programs are in
    ``tests/benchmarks/peers/``; all share our codec, padding, tiling and ``Runner`` (``peers/dehazer.py``), the
    torch threads (``--threads``), the malloc settings and the server-side warm-up, and every server's output for
    the upload is compared with ours before any timing. Every server serves the same artifact in the same precision
    (``--dtype``, default the service's ``auto``: bfloat16 on a CPU with native bfloat16). A peer whose package is
    missing is skipped with a line saying so (CI's `.[test]` has neither LitServe nor PyTriton).

All servers run at once, but only the one being measured runs: the others are paused (SIGSTOP on each of their
processes and what those started, SIGCONT after), so that none takes CPU from it. On two cores that matters: LitServe's
batching server polls its queues every millisecond, about 13% of a core while it has nothing to do, and every other
server's forward took about 9% longer beside it (2026-12-01). The servers table gives each one's ``idle CPU %``,
measured alone over ``--idle-seconds``.

Each server gets the same warm-up (three sequential requests of the upload, after its own warm-up at our worker's
shapes). Then, per model and round, every client count runs every server in turn, the order rotated from round to
round, so slow drifts of a shared machine spread over all servers. A cell: two untimed requests, then ``clients``
closed-loop ``httpx`` clients posting the same PNG for ``--seconds`` (requests in flight at the end are waited for
and counted). ``× ours`` is the median over rounds of (server req/s / ``ours-embedded`` req/s in the same round).

Paired (``--paired`` turns, default 20): one client, one request at a time, the servers taking turns request by
request (the order rotated each turn). A shared machine's speed drifts by tens of percent over the minutes a cell
round takes; here every turn sees the same moment for all servers, so the one-client comparison holds to a few
percent where cells swing by 20-50%. ``× ours`` is the median over turns of (ours' latency / the server's
latency in the same turn): like req/s, above 1 means faster than ours. Each answer's ``Server-Timing`` header
(ours, and the FastAPI and LitServe peers') gives the model's ``compute`` time of that request: ``model p50 ms`` is
its median, ``rest p50 ms`` the median of (latency - model time), what the serving path adds (HTTP, queueing,
decoding, encoding, hand-offs).

First shape: on ``ours-embedded``, uploads of sizes the server has not seen (the upload shrunk by 32 and 64 px a
side, so new padded shapes) are sent 1 + ``--shape-repeats`` times each; the first request's extra latency over
the steady median, and the extra model time the worker recorded (``dehaze_compute_seconds``), as a share of the
steady request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from model.checkpoint import save_checkpoint
from model.export import ensure_artifact
from model.pipeline import build_pipeline
from model.precision import resolve_dtype
from service.api.server_timing import HEADER as TIMING_HEADER
from service.api.server_timing import parse_server_timing
from service.config import PRECISIONS, Settings
from tests.benchmarks import common
from tests.benchmarks.services import LoadResult, metric_delta, metric_sums, running_service
from tests.processes import REDIS_SERVER, REPO, Child, cpu_seconds, free_port, paused, process_tree, stop, wait_ready

logger = logging.getLogger("bench_peers")

OURS = "ours-embedded"
SERVERS = ("ours-embedded", "ours-redis1", "fastapi", "litserve", "litserve-batch", "pytriton")
TRITON_VENV_PYTHON = REPO / ".venv-triton" / "bin" / "python"
TRITON_PYTHON_ENV = "DEHAZE_BENCH_TRITON_PYTHON"
_STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class Peer:
    """How to run one peer program and talk to it."""

    module: str
    ready_path: str
    infer_path: str
    batched: bool
    protocol: str  # "multipart" or "triton"
    distribution: str


PEERS = {
    "fastapi": Peer("serve_fastapi", "/healthz", "/dehaze", False, "multipart", "fastapi"),
    "litserve": Peer("serve_litserve", "/health", "/dehaze", False, "multipart", "litserve"),
    "litserve-batch": Peer("serve_litserve", "/health", "/dehaze", True, "multipart", "litserve"),
    "pytriton": Peer("serve_pytriton", "/v2/models/dehaze/ready", "/v2/models/dehaze/infer", True, "triton", ""),
}


@dataclass
class Server:
    """A started server: where to post, what the bodies look like, what it is."""

    name: str
    url: str
    protocol: str
    version: str
    metrics_urls: list[str] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    """Its processes (each with what it starts): paused while another server is measured."""


# -- arguments ---------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--quick`` changes the defaults of the others to a few seconds in all."""
    parser = argparse.ArgumentParser(prog="bench_peers", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "peers")
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 and 2 clients, 1 s cells, 1 round")
    parser.add_argument("--models", nargs="+", choices=("tiny", "small"), help="default: tiny small")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--clients", type=int, nargs="+", help="client counts (default 1 8 32)")
    parser.add_argument("--seconds", type=float, help="timed closed-loop seconds per cell (default 10)")
    parser.add_argument("--rounds", type=int, help="rounds, the server order rotated in each (default 3)")
    parser.add_argument("--image", type=Path, help="upload (default: the first SOTS hazy scene, as PNG)")
    parser.add_argument("--size", type=common.parse_size, help="resize the upload to HxW (quick: 96x128)")
    parser.add_argument("--peer-batch-size", type=int, default=8, help="litserve-batch and pytriton (default 8)")
    parser.add_argument("--batch-wait-ms", type=float, default=Settings().max_batch_wait_ms)
    parser.add_argument("--our-batch-size", type=int, help="DEHAZE_MAX_BATCH_SIZE (default: the service's)")
    parser.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="auto",
        help="precision every server computes in: the same artifact for all (default: the service's auto)",
    )
    parser.add_argument("--shape-repeats", type=int, default=3, help="steady requests per new shape (default 3)")
    parser.add_argument("--paired", type=int, help="one-client turns, requests alternating (default 20; quick 2)")
    parser.add_argument("--noise", type=float, default=0.05, help="a peer beats ours above 1 + this (default 0.05)")
    parser.add_argument(
        "--idle-seconds", type=float, help="how long each server's idle CPU use is measured (default 5; quick 1)"
    )
    parser.add_argument(
        "--triton-python",
        type=Path,
        help=f"Python with PyTriton (default ${TRITON_PYTHON_ENV}, else .venv-triton/bin/python, else this one)",
    )
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds a server may take to start")
    args = parser.parse_args(argv)
    if args.shape_repeats < 1:
        parser.error("--shape-repeats must be at least 1: the steady latency is measured on the repeats")
    quick = args.quick
    args.models = args.models or (["tiny"] if quick else ["tiny", "small"])
    args.clients = args.clients or ([1, 2] if quick else [1, 8, 32])
    args.seconds = args.seconds if args.seconds is not None else (1.0 if quick else 10.0)
    args.rounds = args.rounds or (1 if quick else 3)
    args.paired = args.paired if args.paired is not None else (2 if quick else 20)
    args.idle_seconds = args.idle_seconds if args.idle_seconds is not None else (1.0 if quick else 5.0)
    args.size = args.size or ((96, 128) if quick else None)
    args.triton_python = args.triton_python or _default_triton_python()
    return args


def _default_triton_python() -> Path:
    if os.environ.get(TRITON_PYTHON_ENV):
        return Path(os.environ[TRITON_PYTHON_ENV])
    return TRITON_VENV_PYTHON if TRITON_VENV_PYTHON.exists() else Path(sys.executable)


# -- the upload and the models -----------------------------------------------------------------------------------------
def upload_png(args: argparse.Namespace) -> tuple[bytes, str]:
    """The PNG every client posts: ``--image`` or the first SOTS hazy scene (a textured picture when absent)."""
    if args.image is not None:
        image, name = Image.open(args.image).convert("RGB"), args.image.stem
    else:
        hazy = sorted((args.data / common.SOTS_FOLDER / "hazy").glob("*.*"))
        image, name = (Image.open(hazy[0]).convert("RGB"), hazy[0].stem) if hazy else (_textured(460, 620), "textured")
    if args.size is not None:
        image = image.resize((args.size[1], args.size[0]), Image.Resampling.BICUBIC)
    return png_bytes(image), f"{name}.png"


def _textured(height: int, width: int) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 7) % 256, (ys * 5) % 256, (xs + ys) % 256], axis=-1) * 0.6
    noise = np.random.default_rng(0).integers(0, 90, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    """An upload as a client would save it (Pillow's default PNG settings)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def model_weights(name: str, args: argparse.Namespace, folder: Path) -> Path:
    """``small``: ``--weights``; ``tiny``: a random-initialised ``dcmpnet_tiny`` (speed does not need training)."""
    if name == "small":
        return Path(args.weights)
    weights = folder / "dcmpnet_tiny.pt"  # the service names the variant after the file
    pipeline = build_pipeline("dcmpnet_tiny").eval()
    save_checkpoint(weights, pipeline.phi, pipeline.psi, "dcmpnet_tiny", {"version": "bench_peers"})
    return weights


# -- availability and versions -----------------------------------------------------------------------------------------
def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def triton_probe(python: Path) -> dict[str, str] | None:
    """``{"version", "libdir"}`` of PyTriton under ``python``, or None when it cannot import it."""
    code = (
        "import importlib.metadata as m, json, sysconfig, pytriton.triton; "
        "print(json.dumps({'version': m.version('nvidia-pytriton'), 'libdir': sysconfig.get_config_var('LIBDIR')}))"
    )
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, check=False)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def why_unavailable(name: str, args: argparse.Namespace) -> str | None:
    """Why ``name`` cannot run here (None when it can)."""
    if name == "ours-redis1" and shutil.which("redis-server") is None and not Path(REDIS_SERVER).exists():
        return "redis-server is not installed"
    if name.startswith("litserve") and importlib.util.find_spec("litserve") is None:
        return 'litserve is not installed (pip install -e ".[bench]")'
    if name == "pytriton" and args.triton_probe is None:
        return (
            f"PyTriton cannot be imported by {args.triton_python} (it needs its own virtual environment: "
            "see tests/benchmarks/requirements-pytriton.txt)"
        )
    return None


def _uvicorn() -> str:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn {_version('uvicorn')}, {loop}"


def server_version(name: str, args: argparse.Namespace) -> str:
    """What is being measured, with versions (uvicorn picks uvloop, and httptools unless told h11, when installed)."""
    if name.startswith("ours"):
        return f"dehaze-service {_version('dehaze-service')}, {_uvicorn()}, h11"
    if name == "fastapi":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        return f"fastapi {_version('fastapi')}, {_uvicorn()}, {http}"
    if name.startswith("litserve"):
        return f"litserve {_version('litserve')}, {_uvicorn()}"
    return f"nvidia-pytriton {args.triton_probe['version']}"


# -- starting servers --------------------------------------------------------------------------------------------------
def _our_env(args: argparse.Namespace, weights: Path, artifact: Path) -> dict[str, str]:
    env = {
        "DEHAZE_WEIGHTS": str(weights),
        "DEHAZE_ARTIFACT": str(artifact),
        "DEHAZE_DEVICE": args.device,
        "DEHAZE_DTYPE": args.dtype,
        "DEHAZE_HOST": "127.0.0.1",
        "DEHAZE_MAX_BATCH_WAIT_MS": str(args.batch_wait_ms),
        "DEHAZE_MAX_QUEUE_LENGTH": str(max(64, 2 * max(args.clients))),
        "DEHAZE_DENSITY_WORKERS": "1",
        "DEHAZE_REQUEST_TIMEOUT_S": "3600",  # a 32-client backlog of the small model outlasts the default 120 s
    }
    if args.our_batch_size is not None:
        env["DEHAZE_MAX_BATCH_SIZE"] = str(args.our_batch_size)
    return env


def start_ours(
    name: str, args: argparse.Namespace, weights: Path, artifact: Path, stack: contextlib.ExitStack
) -> Server:
    """``dehaze serve`` or Redis + api + one worker, through the benchmarks' own launcher (``services``)."""
    backend = name.removeprefix("ours-")
    env = _our_env(args, weights, artifact)
    service = stack.enter_context(running_service(backend, env, args.threads, args.startup_timeout))
    version = server_version(name, args)
    roots = [child.pid for child in service.processes]
    if service.redis is not None and service.redis.pid is not None:
        roots.append(service.redis.pid)
    return Server(name, f"{service.url}/dehaze", "multipart", version, list(service.metrics_urls), roots)


def start_peer(
    name: str, args: argparse.Namespace, artifact: Path, workdir: Path, stack: contextlib.ExitStack
) -> Server:
    """One peer program as a child process leading its own process group (they start helpers of their own)."""
    peer, port = PEERS[name], free_port()
    python, env = Path(sys.executable), dict(os.environ)
    argv = ["--artifact", str(artifact), "--port", str(port), "--threads", str(args.threads)]
    argv += ["--max-batch-size", str(args.peer_batch_size if peer.batched else 1)]
    argv += ["--batch-wait-ms", str(args.batch_wait_ms)]
    if name == "pytriton":
        python = args.triton_python
        argv += ["--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [args.triton_probe["libdir"], env.get("LD_LIBRARY_PATH")]))
    command = [str(python), "-m", f"tests.benchmarks.peers.{peer.module}", *argv]
    child = Child(command, workdir / f"{name}.log", env, own_group=True)
    stack.callback(stop, [child], _STOP_GRACE_S)
    base = f"http://127.0.0.1:{port}"
    wait_ready(
        lambda: httpx.get(base + peer.ready_path, timeout=5).status_code == 200, args.startup_timeout, name, [child]
    )
    version = server_version(name, args)
    if name == "pytriton":
        version += f", Triton {httpx.get(base + '/v2', timeout=5).json().get('version', '?')}"
    return Server(name, base + peer.infer_path, peer.protocol, version, roots=[child.pid])


# -- requests ----------------------------------------------------------------------------------------------------------
def request_body(protocol: str, payload: bytes, filename: str) -> tuple[bytes, dict[str, str]]:
    """The POST body and headers, built once: a multipart ``image`` field, or a Triton binary-tensor request."""
    if protocol == "multipart":
        request = httpx.Request("POST", "http://x/", files={"image": (filename, payload, "image/png")})
        return request.read(), {"Content-Type": request.headers["Content-Type"]}
    inputs = [
        {"name": "image", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + len(payload)}}
    ]
    header = json.dumps({"inputs": inputs, "outputs": [{"name": "png", "parameters": {"binary_data": True}}]}).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return header + struct.pack("<I", len(payload)) + payload, headers


def answer_png(protocol: str, response: httpx.Response) -> bytes:
    """The PNG in a response (Triton: after the JSON header, behind a 4-byte length)."""
    if protocol == "multipart":
        return response.content
    start = int(response.headers["Inference-Header-Content-Length"])
    (length,) = struct.unpack("<I", response.content[start : start + 4])
    return response.content[start + 4 : start + 4 + length]


async def _client(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], deadline: float, result: LoadResult
) -> None:
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            status = (await client.post(url, content=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 0
        if status == 200:
            result.latencies_s.append(time.perf_counter() - started)
        result.statuses.append(status)


async def _cell(url: str, body: bytes, headers: dict[str, str], clients: int, seconds: float) -> LoadResult:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=3600.0, limits=limits) as client:
        warm = [client.post(url, content=body, headers=headers) for _ in range(min(clients, 2))]
        await asyncio.gather(*warm)
        result = LoadResult([], [], 0.0)
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_client(client, url, body, headers, deadline, result) for _ in range(clients)))
        result.wall_s = time.perf_counter() - started
    return result


def run_cell(server: Server, body: bytes, headers: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    """Two untimed requests, then ``clients`` closed-loop clients for ``seconds``: req/s and latency."""
    load = asyncio.run(_cell(server.url, body, headers, clients, seconds))
    latency = common.percentiles_ms(load.latencies_s) if load.latencies_s else {}
    return {
        "server": server.name,
        "clients": clients,
        "ok": load.ok,
        "errors": len(load.statuses) - load.ok,
        "rps": load.throughput,
        "wall_s": load.wall_s,
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": latency.get("p95_ms"),
    }


# -- warm-up and the output check --------------------------------------------------------------------------------------
def max_difference(pixels: np.ndarray, reference: np.ndarray) -> int | None:
    """Largest 8-bit difference between two answers (None when their sizes differ)."""
    return int(np.abs(pixels - reference).max()) if pixels.shape == reference.shape else None


def warm_up(server: Server, payload: bytes, filename: str, requests: int = 3) -> tuple[list[float], np.ndarray]:
    """``requests`` sequential requests of the upload: their latencies (s) and the last answer's pixels."""
    body, headers = request_body(server.protocol, payload, filename)
    latencies, answer = [], b""
    with httpx.Client(timeout=3600.0) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = client.post(server.url, content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{server.name} answered {response.status_code}: {response.text[:500]}")
            answer = answer_png(server.protocol, response)
    return latencies, np.asarray(Image.open(io.BytesIO(answer)).convert("RGB"), dtype=np.int16)


# -- the first forwards of a new shape ---------------------------------------------------------------------------------
def new_sizes(height: int, width: int, multiple: int) -> list[tuple[int, int]]:
    """Two sizes whose padded shapes differ from the upload's and from each other: 1 and 2 multiples smaller."""
    return [(height - k * multiple, width - k * multiple) for k in (1, 2) if height - k * multiple >= 8]


def first_shape_rows(server: Server, payload: bytes, repeats: int) -> list[dict[str, Any]]:
    """Per new size: the first, second and steady request (latency and the worker's compute time)."""
    original = Image.open(io.BytesIO(payload)).convert("RGB")
    settings = Settings()
    rows = []
    for height, width in new_sizes(original.height, original.width, settings.bucket_multiple):
        upload = png_bytes(original.resize((width, height), Image.Resampling.BICUBIC))
        body, headers = request_body("multipart", upload, "new.png")
        latency, compute = [], []
        with httpx.Client(timeout=3600.0) as client:
            for _ in range(1 + repeats):
                before = metric_sums(server.metrics_urls)
                started = time.perf_counter()
                response = client.post(server.url, content=body, headers=headers)
                latency.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{server.name} answered {response.status_code}: {response.text[:500]}")
                compute.append(metric_delta(metric_sums(server.metrics_urls), before)["dehaze_compute_seconds_sum"])
        rows.append(_first_shape_row(height, width, settings.bucket_multiple, latency, compute))
    return rows


def _first_shape_row(
    height: int, width: int, multiple: int, latency: list[float], compute: list[float]
) -> dict[str, Any]:
    padded = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
    steady = statistics.median(latency[2:] or latency[1:])
    steady_compute = statistics.median(compute[2:] or compute[1:])
    return {
        "size": f"{height}x{width}",
        "padded": f"{padded[0]}x{padded[1]}",
        "first_ms": latency[0] * 1000.0,
        "second_ms": latency[1] * 1000.0 if len(latency) > 1 else None,
        "steady_ms": steady * 1000.0,
        "extra_ms": (latency[0] - steady) * 1000.0,
        "extra_share": (latency[0] - steady) / steady,
        "compute_first_ms": compute[0] * 1000.0,
        "compute_steady_ms": steady_compute * 1000.0,
        "compute_extra_share": (compute[0] - steady_compute) / steady,
    }


# -- one server at a time ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def alone(server: Server, servers: Sequence[Server]) -> Iterator[None]:
    """Every other server paused (SIGSTOP) while ``server`` is measured, so none takes CPU from it."""
    with paused([pid for other in servers if other is not server for pid in other.roots]):
        yield


def idle_cpu(servers: Sequence[Server], seconds: float) -> dict[str, float]:
    """Each server's CPU use while nobody sends it anything, in percent of one core, measured alone."""
    use = {}
    for server in servers:
        with alone(server, servers):
            pids = process_tree(server.roots)
            before = cpu_seconds(pids)
            time.sleep(seconds)
            use[server.name] = 100.0 * (cpu_seconds(pids) - before) / seconds
    return use


# -- one model ---------------------------------------------------------------------------------------------------------
def start_servers(
    names: Sequence[str],
    args: argparse.Namespace,
    weights: Path,
    artifact: Path,
    workdir: Path,
    stack: contextlib.ExitStack,
) -> list[Server]:
    """Every server, one after the other (each waits for its own warm-up)."""
    servers = []
    for name in names:
        logger.info("starting %s", name)
        if name.startswith("ours"):
            servers.append(start_ours(name, args, weights, artifact, stack))
        else:
            servers.append(start_peer(name, args, artifact, workdir, stack))
    return servers


def measure_model(
    model: str, names: Sequence[str], args: argparse.Namespace, payload: bytes, filename: str, folder: Path
) -> dict[str, Any]:
    """Start every server for one model, warm and check them, measure the first shape, then the rounds.

    The first server's answer (ours whenever ours runs: servers start in ``SERVERS`` order) is the reference of
    the output check.
    """
    weights = model_weights(model, args, folder)
    base = Settings(weights=weights, artifact=folder / f"{weights.stem}.ts.pt")
    artifact = ensure_artifact(weights, base.artifact_path(args.dtype), args.dtype)  # what ours exports, for all
    out: dict[str, Any] = {"model": model, "weights": str(weights), "servers": [], "cells": [], "first_shape": []}
    with contextlib.ExitStack() as stack:
        servers = start_servers(names, args, weights, artifact, folder, stack)
        reference: np.ndarray | None = None
        for server in servers:
            latencies, pixels = warm_up(server, payload, filename)
            reference = pixels if reference is None else reference
            out["servers"].append(
                {
                    "model": model,
                    "server": server.name,
                    "version": server.version,
                    "warm_up_ms": [s * 1000.0 for s in latencies],
                    "max_diff_vs_ours": max_difference(pixels, reference),
                }
            )
        idle = idle_cpu(servers, args.idle_seconds)
        for row in out["servers"]:
            row["idle_cpu_percent"] = idle[row["server"]]
        ours = next((s for s in servers if s.name == OURS), None)
        if ours is not None:
            with alone(ours, servers):
                shapes = first_shape_rows(ours, payload, args.shape_repeats)
            out["first_shape"] = [{"model": model, **row} for row in shapes]
        out["paired"] = run_paired(model, servers, args.paired, payload, filename)
        out["cells"] = run_rounds(model, servers, args, payload, filename)
    return out


def run_paired(model: str, servers: list[Server], turns: int, payload: bytes, filename: str) -> list[dict[str, Any]]:
    """``turns`` turns of one sequential request to every server (order rotated each turn): per server, the
    median latency and the median over turns of ours' latency over its own (see the module docstring)."""
    bodies = {s.name: request_body(s.protocol, payload, filename) for s in servers}
    latencies: dict[str, list[float]] = {s.name: [] for s in servers}
    computes: dict[str, list[float]] = {s.name: [] for s in servers}  # the model's seconds, from Server-Timing
    with httpx.Client(timeout=3600.0) as client:
        for turn in range(turns):
            shift = turn % len(servers)
            for server in servers[shift:] + servers[:shift]:
                with alone(server, servers):
                    started = time.perf_counter()
                    response = client.post(server.url, content=bodies[server.name][0], headers=bodies[server.name][1])
                ok = response.status_code == 200
                latencies[server.name].append(time.perf_counter() - started if ok else math.nan)
                stages = parse_server_timing(response.headers.get(TIMING_HEADER, ""))
                computes[server.name].append(stages["compute"] / 1000.0 if ok and "compute" in stages else math.nan)
    rows = []
    for server in servers:
        own = latencies[server.name]
        ratios = [o / s for o, s in zip(latencies.get(OURS, []), own, strict=False) if math.isfinite(o / s)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else None
        finite = [s for s in own if math.isfinite(s)]
        model_s = [c for c in computes[server.name] if math.isfinite(c)]
        rest_s = [t - c for t, c in zip(own, computes[server.name], strict=True) if math.isfinite(t - c)]
        rows.append({
            "model": model, "server": server.name, "turns": turns, "ok": len(finite),
            "p50_ms": 1000.0 * statistics.median(finite) if finite else None,
            "model_p50_ms": 1000.0 * statistics.median(model_s) if model_s else None,
            "rest_p50_ms": 1000.0 * statistics.median(rest_s) if rest_s else None,
            "x_ours": statistics.median(ratios) if ratios else None,
            "x_ours_iqr": f"{quartiles[0]:.2f}-{quartiles[2]:.2f}" if quartiles else None,
        })  # fmt: skip
        logger.info("%s paired %s: p50 %s ms", model, server.name, rows[-1]["p50_ms"])
    return rows


def run_rounds(
    model: str, servers: list[Server], args: argparse.Namespace, payload: bytes, filename: str
) -> list[dict[str, Any]]:
    """Every round: every client count, every server in an order rotated by one server per round."""
    bodies = {s.name: request_body(s.protocol, payload, filename) for s in servers}
    cells = []
    for round_index in range(args.rounds):
        shift = round_index % len(servers)
        order = servers[shift:] + servers[:shift]
        for clients in args.clients:
            for server in order:
                with alone(server, servers):
                    cell = run_cell(server, *bodies[server.name], clients, args.seconds)
                cells.append({"model": model, "round": round_index, **cell})
                logger.info("%s r%d c=%d %s: %.2f req/s", model, round_index, clients, server.name, cell["rps"])
    return cells


# -- summary and targets -----------------------------------------------------------------------------------------------
def summarise(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, clients, server): medians over rounds, and the ratio to ours in the same round."""
    ours = {(c["model"], c["round"], c["clients"]): c["rps"] for c in cells if c["server"] == OURS}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["model"], cell["clients"], cell["server"]), []).append(cell)
    rows = []
    for (model, clients, server), group in groups.items():
        ratios = [
            c["rps"] / ours[(model, c["round"], clients)] for c in group if ours.get((model, c["round"], clients))
        ]
        rows.append(
            {
                "model": model,
                "clients": clients,
                "server": server,
                "rounds": len(group),
                "rps": statistics.median(c["rps"] for c in group),
                "x_ours": statistics.median(ratios) if ratios else None,
                "x_ours_range": f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else None,
                "p50_ms": _median_of(group, "p50_ms"),
                "p95_ms": _median_of(group, "p95_ms"),
                "ok": sum(c["ok"] for c in group),
                "errors": sum(c["errors"] for c in group),
            }
        )
    return rows


def _median_of(group: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [c[key] for c in group if c[key] is not None]
    return statistics.median(values) if values else None


def peer_targets(summary: Sequence[dict[str, Any]], noise: float) -> list[dict[str, Any]]:
    """Per peer: its highest ``× ours`` over all cells, which must stay within ``1 + noise``."""
    targets = []
    peers = dict.fromkeys(r["server"] for r in summary if not r["server"].startswith("ours"))
    for peer in peers:
        ratios = [r["x_ours"] for r in summary if r["server"] == peer and r["x_ours"] is not None]
        name = f"ours-embedded >= {peer} at every cell (highest median {peer} req/s / ours)"
        targets.append(common.target(name, max(ratios) if ratios else None, "<=", 1.0 + noise))
    return targets


SERVER_COLUMNS = [
    common.Column("model", "model"),
    common.Column("server", "server"),
    common.Column("version", "version"),
    common.Column("warm_first_ms", "1st req ms", ".0f"),
    common.Column("warm_third_ms", "3rd req ms", ".0f"),
    common.Column("idle_cpu_percent", "idle CPU %", ".1f"),
    common.Column("max_diff_vs_ours", "max |Δ| vs ours"),
]
SUMMARY_COLUMNS = [
    common.Column("model", "model"),
    common.Column("clients", "clients"),
    common.Column("server", "server"),
    common.Column("rps", "req/s", ".2f"),
    common.Column("x_ours", "× ours", ".2f"),
    common.Column("x_ours_range", "rounds"),
    common.Column("p50_ms", "p50 ms", ".0f"),
    common.Column("p95_ms", "p95 ms", ".0f"),
    common.Column("ok", "ok"),
    common.Column("errors", "errors"),
]
PAIRED_COLUMNS = [
    common.Column("model", "model"),
    common.Column("server", "server"),
    common.Column("turns", "turns"),
    common.Column("ok", "ok"),
    common.Column("p50_ms", "p50 ms", ".0f"),
    common.Column("model_p50_ms", "model p50 ms", ".0f"),
    common.Column("rest_p50_ms", "rest p50 ms", ".0f"),
    common.Column("x_ours", "× ours", ".3f"),
    common.Column("x_ours_iqr", "turns' IQR"),
]
SHAPE_COLUMNS = [
    common.Column("model", "model"),
    common.Column("size", "new size"),
    common.Column("padded", "padded"),
    common.Column("first_ms", "1st ms", ".0f"),
    common.Column("second_ms", "2nd ms", ".0f"),
    common.Column("steady_ms", "steady ms", ".0f"),
    common.Column("extra_share", "1st extra / request", ".1%"),
    common.Column("compute_first_ms", "model 1st ms", ".0f"),
    common.Column("compute_steady_ms", "model steady ms", ".0f"),
    common.Column("compute_extra_share", "model extra / request", ".1%"),
]


def print_results(results: dict[str, Any]) -> None:
    """The tables: servers (versions, warm-up, output check), throughput, first shape."""
    for line in results["skipped"]:
        print(line)
    servers = [
        {**s, "warm_first_ms": s["warm_up_ms"][0], "warm_third_ms": s["warm_up_ms"][-1]} for s in results["servers"]
    ]
    print(common.format_table(servers, SERVER_COLUMNS, title="servers:"))
    print(common.format_table(results["summary"], SUMMARY_COLUMNS, title="throughput (medians over rounds):"))
    if results["paired"]:
        title = "one client, requests alternating between servers (× ours: ours' latency / the server's, per turn):"
        print(common.format_table(results["paired"], PAIRED_COLUMNS, title=title))
    if results["first_shape"]:
        print(
            common.format_table(results["first_shape"], SHAPE_COLUMNS, title=f"first request of a new shape ({OURS}):")
        )


# -- main --------------------------------------------------------------------------------------------------------------
def available_servers(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The servers that can run here, and one line per skipped one."""
    args.triton_probe = triton_probe(args.triton_python) if "pytriton" in args.servers else None
    names, skipped = [], []
    for name in sorted(set(args.servers), key=SERVERS.index):  # ours first: the reference of the output check
        reason = why_unavailable(name, args)
        if reason is None:
            names.append(name)
        else:
            skipped.append(f"skipped {name}: {reason}")
            logger.warning("skipping %s: %s", name, reason)
    return names, skipped


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every model on every available server, print the tables and targets, write the JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    device = common.setup_torch(args.threads, args.device)
    args.dtype = resolve_dtype(args.dtype, device.type)
    if device.type == "cuda" and args.dtype != "float32":
        raise SystemExit("bench_peers: on CUDA only ours can autocast; compare in float32 there")
    machine = common.machine_info(device, args.threads)
    names, skipped = available_servers(args)
    payload, filename = upload_png(args)
    results: dict[str, Any] = {"skipped": skipped, "servers": [], "cells": [], "first_shape": [], "paired": []}
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix=f"bench_peers_{model}_") as tmp:
            measured = measure_model(model, names, args, payload, filename, Path(tmp))
        for key in ("servers", "cells", "first_shape", "paired"):
            results[key] += measured[key]
    results["summary"] = summarise(results["cells"])
    print_results(results)
    targets = peer_targets(results["summary"], args.noise)
    common.print_targets(targets)
    common.write_report(args.out, "peers", machine, _config(args, names, payload, filename), results, targets)
    print(f"wrote {args.out}")
    return results


def _config(args: argparse.Namespace, names: list[str], payload: bytes, filename: str) -> dict[str, Any]:
    size = Image.open(io.BytesIO(payload)).size
    return {
        "models": args.models,
        "servers": names,
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "paired_turns": args.paired,
        "upload": f"{filename} {size[0]}x{size[1]} PNG, {len(payload)} bytes",
        "dtype": args.dtype,
        "peer_batch_size": args.peer_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "our_batch_size": args.our_batch_size
        or Settings().batch_size_on(args.device if args.device != "auto" else "cpu"),
        "triton_python": str(args.triton_python),
        "noise": args.noise,
        "x_ours": "median over rounds of (server req/s / ours-embedded req/s in the same round)",
    }


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
