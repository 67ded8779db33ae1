"""Service end to end: N concurrent HTTP clients, swept over batching settings and over the queue backends.

    python -m tests.benchmarks.bench_service --out runs/benchmarks/service.json

The service runs as real child processes (``dehaze serve``, or ``redis-server`` + ``dehaze api`` + N ``dehaze
worker``), configured by ``DEHAZE_*`` variables; clients are closed-loop ``httpx`` clients POSTing the same image
to ``/dehaze`` (PNG back) until ``--requests`` are answered, after an untimed warm-up. Latency is the client's wall
time per request (send to last byte); throughput is answered requests per second of wall time.

Three parts:
    ``overhead``: embedded backend at the default settings, one client, one request at a time. Definition::

        overhead_share = (p50 service latency - p50 model time) / p50 model time

    where model time is the same image through the same worker path (``ImagePlan`` pieces grouped by shape,
    ``Runner.run_items`` on the same TorchScript artifact in the same precision, ``--dtype``, with the same torch
    threads, i.e. what the worker times as compute) measured in this process, one measurement after each request,
    so both see the same machine load. The worker's own figures (Prometheus histograms) split the rest: queue
    wait, worker-side decode + tiling + stitching + encode, and HTTP (upload parsing, header check, submit,
    response).
    ``sweep``: embedded backend, every ``--batch-sizes`` × ``--batch-waits-ms`` pair, every ``--concurrency``.
    ``backends``: embedded vs Redis with 1 and 2 workers at the default batching settings. The torch threads are
    split between workers (``--threads`` // workers each), so every backend gets the same CPU budget.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.export import ensure_artifact
from model.precision import artifact_dtype_for, resolve_dtype
from service.codec import decode_image
from service.config import PRECISIONS, Settings
from service.worker.batching import group_by_shape
from service.worker.plan import ImagePlan
from service.worker.runner import Runner
from tests.benchmarks import common
from tests.benchmarks.services import BACKENDS, ServiceProcesses, metric_delta, metric_sums, run_load, running_service

OVERHEAD_DEFINITION = (
    "(p50 latency of one 620x460 request at concurrency 1 - p50 model time of the same image through the worker "
    "path (ImagePlan pieces, Runner.run_items, same artifact and threads) measured in the benchmark process after "
    "each request) / p50 model time"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: the service's own settings in the middle of the sweep)."""
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="bench_service", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "service")
    parser.add_argument("--image", type=Path, help="image to upload (default: the first SOTS hazy scene)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="clients (default 1 4)")
    parser.add_argument("--requests", type=int, default=12, help="timed requests per configuration (default 12)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-waits-ms", type=float, nargs="+", default=[0.0, defaults.max_batch_wait_ms, 50.0])
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--overhead-requests", type=int, default=5, help="sequential requests of the overhead part")
    parser.add_argument("--parts", nargs="+", choices=("overhead", "sweep", "backends"), default=None)
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds a deployment may take to start")
    parser.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="auto",
        help="precision of the deployments and of the overhead's model time (default: the service's auto)",
    )
    args = parser.parse_args(argv)
    args.parts = args.parts or ["overhead", "sweep", "backends"]
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    args.default_batch = (defaults.batch_size_on(device), defaults.max_batch_wait_ms)
    return args


def _image(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.image is not None:
        return args.image.read_bytes(), args.image.name
    path = sorted((args.data / common.SOTS_FOLDER / "hazy").glob("*.*"))[0]
    return path.read_bytes(), path.name


def _env(args: argparse.Namespace, artifact: Path, batch_size: int, wait_ms: float) -> dict[str, str]:
    queue = max(64, 2 * max(args.concurrency))
    return {
        "DEHAZE_WEIGHTS": str(args.weights),
        "DEHAZE_ARTIFACT": str(artifact),
        "DEHAZE_DEVICE": args.device,
        "DEHAZE_DTYPE": args.dtype,
        "DEHAZE_HOST": "127.0.0.1",
        "DEHAZE_MAX_BATCH_SIZE": str(batch_size),
        "DEHAZE_MAX_BATCH_WAIT_MS": str(wait_ms),
        "DEHAZE_MAX_QUEUE_LENGTH": str(queue),
        "DEHAZE_DENSITY_WORKERS": "1",
        "DEHAZE_REQUEST_TIMEOUT_S": "3600",  # a backlog on a CPU can outlast the default 120 s; no 504s here
    }


def _threads_per_worker(args: argparse.Namespace, backend: str) -> int:
    return max(1, args.threads // max(1, BACKENDS[backend]))


# -- overhead ------------------------------------------------------------------------------------------------------
def model_seconds(runner: Runner, image: Any, settings: Settings) -> float:
    """Forward time of one image through the worker path: its pieces grouped by shape, ``run_items`` each."""
    plan = ImagePlan(image, settings.tile_size, settings.tile_overlap, settings.bucket_multiple)
    total = 0.0
    for group in group_by_shape(plan.pieces, lambda p: p.shape, settings.batch_size_on(runner.device.type)):
        items = [piece.pixels(image) for piece in group]
        _, seconds = common.timed(lambda items=items: runner.run_items(items), runner.device)
        total += seconds
    return total


def measure_overhead(
    service: ServiceProcesses, args: argparse.Namespace, artifact: Path, payload: bytes, filename: str
) -> dict[str, Any]:
    """Sequential requests to an idle embedded deployment, each followed by the same image's model time here."""
    settings = Settings()
    image = decode_image(payload, settings.max_pixels)
    runner = Runner.from_artifact(artifact, device=args.device, dtype=args.dtype)  # as the deployment computes
    url = f"{service.url}/dehaze"
    for _ in range(3):  # warm-up: the TorchScript executor specialises on the piece shape over its first calls
        run_load(url, payload, 1, 1, filename)
        model_seconds(runner, image, settings)
    latencies, model, splits = [], [], []
    for index in range(args.overhead_requests):
        before = metric_sums(service.metrics_urls)
        load = run_load(url, payload, 1, 1, filename)
        if load.ok != 1:
            raise RuntimeError(f"overhead request failed with status {load.statuses}\n{service.log_tail()}")
        splits.append(_split(metric_delta(metric_sums(service.metrics_urls), before)))
        latencies.append(load.latencies_s[0])
        model.append(model_seconds(runner, image, settings))
        print(f"  overhead {index}: {latencies[-1]:.3f} s vs model {model[-1]:.3f} s", file=sys.stderr, flush=True)
    latency, model_time = statistics.median(latencies), statistics.median(model)
    breakdown = {key: statistics.median(s[key] for s in splits) * 1000.0 for key in splits[0]}
    computes = [split["server_compute"] for split in splits]
    in_situ = statistics.median((lat - c) / c for lat, c in zip(latencies, computes, strict=True))
    return {
        "image": f"{filename} {image.shape[1]}x{image.shape[0]}",
        "latency_ms": common.percentiles_ms(latencies),
        "model_ms": common.percentiles_ms(model),
        "overhead_ms": (latency - model_time) * 1000.0,
        "overhead_share": (latency - model_time) / model_time,
        "breakdown_ms_p50": breakdown,
        "overhead_share_in_situ": in_situ,
        "definition": OVERHEAD_DEFINITION,
        "definition_in_situ": "median over requests of (latency - the worker's own compute time for that request) "
        "/ that compute time: the same request at the same moment, so insensitive to load changes",
    }


def _split(delta: dict[str, float]) -> dict[str, float]:
    """One request's time split (seconds) from the worker's and the API's histogram deltas."""
    compute = delta.get("dehaze_compute_seconds_sum", 0.0)
    job = delta.get("dehaze_job_duration_seconds_sum", 0.0)
    wait = delta.get("dehaze_queue_wait_seconds_sum", 0.0)
    request = delta.get("dehaze_request_duration_seconds_sum", 0.0)
    return {
        "server_request": request,
        "server_compute": compute,
        "queue_wait": wait,
        "worker_decode_tile_stitch_encode": job - wait - compute,
        "http_and_submit": request - job,
    }


# -- load runs ---------------------------------------------------------------------------------------------------
def load_row(service: ServiceProcesses, payload: bytes, filename: str, concurrency: int, total: int) -> dict[str, Any]:
    """Warm up, then ``total`` requests from ``concurrency`` clients: throughput, latency percentiles, batch size."""
    url = f"{service.url}/dehaze"
    run_load(url, payload, concurrency, max(2, concurrency), filename)
    before = metric_sums(service.metrics_urls)
    load = run_load(url, payload, concurrency, total, filename)
    delta = metric_delta(metric_sums(service.metrics_urls), before)
    forwards = delta.get("dehaze_batch_size_count", 0.0)
    latency = common.percentiles_ms(load.latencies_s) if load.latencies_s else {}
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": load.ok,
        "errors": total - load.ok,
        "throughput_rps": load.throughput,
        "wall_s": load.wall_s,
        **{key: latency.get(key) for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
        "mean_forward_batch": delta.get("dehaze_batch_size_sum", 0.0) / forwards if forwards else None,
        "forwards": forwards,
    }


Key = tuple[str, int, float]


def run_deployment(
    args: argparse.Namespace, artifact: Path, payload: bytes, filename: str, key: Key, overhead: bool
) -> dict[str, Any]:
    """One deployment (backend and batching settings): the overhead part if asked, then every concurrency level."""
    backend, batch = key[0], key[1:]
    threads = _threads_per_worker(args, backend)
    out: dict[str, Any] = {"rows": []}
    with running_service(backend, _env(args, artifact, *batch), threads, args.startup_timeout) as service:
        if overhead:
            out["overhead"] = measure_overhead(service, args, artifact, payload, filename)
        for concurrency in args.concurrency if args.loads_needed else ():
            row = load_row(service, payload, filename, concurrency, args.requests)
            row = {"backend": backend, "workers": BACKENDS[backend], "threads_per_worker": threads, **row}
            out["rows"].append({**row, "max_batch_size": batch[0], "max_batch_wait_ms": batch[1]})
            print(f"  {backend} {batch} c={concurrency}: {row['throughput_rps']:.3f} req/s", file=sys.stderr)
    return out


def plan_deployments(args: argparse.Namespace) -> list[Key]:
    """Every deployment the asked parts need, each once (the default embedded one serves all three parts)."""
    default: Key = ("embedded", *args.default_batch)
    keys: list[Key] = [default] if "overhead" in args.parts else []
    if "sweep" in args.parts:
        keys += [("embedded", size, wait) for size in args.batch_sizes for wait in args.batch_waits_ms]
    if "backends" in args.parts:
        keys += [(backend, *args.default_batch) for backend in args.backends]
    return list(dict.fromkeys(keys))


COLUMNS = [
    common.Column("backend", "backend"),
    common.Column("max_batch_size", "batch"),
    common.Column("max_batch_wait_ms", "wait ms", ".0f"),
    common.Column("concurrency", "clients"),
    common.Column("ok", "ok"),
    common.Column("throughput_rps", "req/s", ".3f"),
    common.Column("p50_ms", "p50 ms", ".0f"),
    common.Column("p95_ms", "p95 ms", ".0f"),
    common.Column("p99_ms", "p99 ms", ".0f"),
    common.Column("mean_forward_batch", "mean fwd batch", ".2f"),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the parts asked for, print the tables, write the JSON; returns the results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    args.dtype = resolve_dtype(args.dtype, device.type)
    machine = common.machine_info(device, args.threads)
    payload, filename = _image(args)
    results: dict[str, Any] = {}
    args.loads_needed = bool({"sweep", "backends"} & set(args.parts))
    default: Key = ("embedded", *args.default_batch)
    done: dict[Key, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_service_") as tmp:
        exported = artifact_dtype_for(args.dtype, device.type)  # what the deployments load: the same file
        base = Settings(weights=args.weights, artifact=Path(tmp) / f"{args.weights.stem}.ts.pt")
        artifact = ensure_artifact(args.weights, base.artifact_path(exported), exported)
        for key in plan_deployments(args):
            overhead = "overhead" in args.parts and key == default
            done[key] = run_deployment(args, artifact, payload, filename, key, overhead)
    if "overhead" in args.parts:
        results["overhead"] = done[default]["overhead"]
    if "sweep" in args.parts:
        grid = [("embedded", b, w) for b in args.batch_sizes for w in args.batch_waits_ms]
        results["sweep"] = [row for key in grid for row in done[key]["rows"]]
    if "backends" in args.parts:
        results["backends"] = [row for b in args.backends for row in done[(b, *args.default_batch)]["rows"]]
    _print(results)
    targets = _targets(results)
    common.print_targets(targets)
    config = {
        "weights": str(args.weights),
        "image": filename,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "batch_sizes": args.batch_sizes,
        "batch_waits_ms": args.batch_waits_ms,
        "backends": args.backends,
        "default_batch": list(args.default_batch),
        "dtype": args.dtype,
        "threads_per_worker": {b: _threads_per_worker(args, b) for b in args.backends},
        "latency": "client wall time per request, send to last byte of the PNG response",
    }
    common.write_report(args.out, "service", machine, config, results, targets)
    print(f"wrote {args.out}")
    return results


def _print(results: dict[str, Any]) -> None:
    if "overhead" in results:
        o = results["overhead"]
        print(
            f"overhead ({o['image']}, 1 client): latency p50 {o['latency_ms']['p50_ms']:.0f} ms, "
            f"model p50 {o['model_ms']['p50_ms']:.0f} ms, overhead {o['overhead_ms']:.0f} ms "
            f"= {o['overhead_share']:.1%} of model time"
        )
        print(
            f"  cross-check, against the worker's own compute time of each request: {o['overhead_share_in_situ']:.1%}"
        )
        print("  split (server side, p50 ms): " + ", ".join(f"{k} {v:.0f}" for k, v in o["breakdown_ms_p50"].items()))
    for part in ("sweep", "backends"):
        if results.get(part):
            print(common.format_table(results[part], COLUMNS, title=f"{part}:"))


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    if "overhead" not in results:
        return []
    return [
        common.target(
            "service overhead share of model time (620x460)", results["overhead"]["overhead_share"], "<=", 0.15
        )
    ]


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
