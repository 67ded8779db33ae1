"""Memory: the server's peak RSS (and GPU memory) while it serves a 12-megapixel upload and while it runs a full batch.

    python -m tests.benchmarks.bench_memory --out runs/benchmarks/memory.json

The embedded service (``dehaze serve``, default settings except a long ``max_batch_wait_ms`` so that concurrent
requests surely share one batch) runs as a child process. Before each case its peak RSS (``VmHWM`` in
``/proc/PID/status``) is reset to its current RSS (``/proc/PID/clear_refs``), so each figure is that case's own
peak, model and runtime included. Each case also gets a service process of its own: the ``dehaze`` command tunes
glibc malloc to keep freed buffers for reuse (``commands.allocator``), so after one case the RSS stays near that case's
peak and a later case in the same process could not show a lower one. Cases:

    ``idle``: after start and warm-up (of the first case's process).
    ``upload``: one 4000×3000 JPEG (a real hazy photograph resized) to ``POST /dehaze``, PNG back: decode, the tiles
        of ``DEHAZE_TILE_SIZE``² in forwards of ``max_batch_size``, stitching, encoding.
    ``upload_json``: the same with ``?response=json`` (adds the depth map and FADE before and after, computed in
        the FADE pool, whose processes' peaks are reported separately).
    ``full_batch``: ``max_batch_size`` concurrent tile-size uploads (one tile each), which the worker takes as one
        batch; the mean forward batch size from the worker's metrics shows it.
The compute budget (``DEHAZE_MAX_COMPUTE_PIXELS``) is raised to four times the upload's pixels, since the CPU
default (a 1080p photo's tiles) refuses a 12 MP upload; everything else is the service's default, including its
precision (``DEHAZE_DTYPE=auto``).
``--max-batch-sizes 8 4 2`` repeats the cases with one deployment per ``DEHAZE_MAX_BATCH_SIZE``: the forward of a
full batch of 512² tiles dominates the peak, so this is the setting that bounds memory.
On CUDA the worker's ``dehaze_gpu_memory_bytes{kind="max_allocated"}`` is reported too (warm-up included).
Target (CPU): the 12-megapixel upload served with a peak RSS under 2 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from model.export import ensure_artifact
from service.config import Settings
from tests.benchmarks import common
from tests.benchmarks.services import ServiceProcesses, metric_delta, metric_sums, run_load, running_service

GIB = 1024**3
TWELVE_MP = (4000, 3000)
REQUEST_TIMEOUT_S = 3600  # a 12 MP upload takes minutes on a 2-core CPU; the service's default would give 504


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench_memory", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "memory")
    parser.add_argument("--photo", type=Path, help="photo to enlarge to 12 MP (default: a real-hazy photo)")
    parser.add_argument("--upload-size", type=int, nargs=2, default=TWELVE_MP, metavar=("W", "H"))
    parser.add_argument("--batch-image-size", type=int, default=Settings().tile_size, help="side of the batch images")
    parser.add_argument("--cases", nargs="+", choices=("upload", "upload_json", "full_batch"), default=None)
    parser.add_argument(
        "--max-batch-sizes",
        type=int,
        nargs="+",
        default=None,
        help="one deployment per value of DEHAZE_MAX_BATCH_SIZE (default: the service's default on the device)",
    )
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    args.cases = args.cases or ["upload", "upload_json", "full_batch"]
    return args


def _jpeg(args: argparse.Namespace, width: int, height: int) -> bytes:
    path = args.photo or sorted((args.data / "real-hazy").glob("*_input.png"))[0]
    with Image.open(path) as opened:
        image = opened.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the FADE pool's processes and their resource tracker)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


def measure_case(service: ServiceProcesses, send: Callable[[], Any]) -> dict[str, Any]:
    """Reset the peaks, run ``send``, and read every process's peak RSS and the worker's metrics delta."""
    pid = service.model_pids[0]
    processes = [pid, *_children(pid)]
    for p in processes:
        common.reset_peak_rss(p)
    baseline = common.rss_bytes(pid)
    before = metric_sums(service.metrics_urls)
    started = time.perf_counter()
    outcome = send()
    seconds = time.perf_counter() - started
    delta = metric_delta(metric_sums(service.metrics_urls), before)
    forwards = delta.get("dehaze_batch_size_count", 0.0)
    children = {str(p): common.peak_rss_bytes(p) / 2**20 for p in processes[1:] if Path(f"/proc/{p}").exists()}
    return {
        "ok": outcome,
        "seconds": seconds,
        "rss_before_mib": baseline / 2**20,
        "peak_rss_mib": common.peak_rss_bytes(pid) / 2**20,
        "children_peak_rss_mib": children,
        "forwards": forwards,
        "mean_forward_batch": delta.get("dehaze_batch_size_sum", 0.0) / forwards if forwards else None,
        "gpu_max_allocated_mib": _gpu(service),
    }


def _gpu(service: ServiceProcesses) -> float | None:
    value = metric_sums(service.metrics_urls).get("dehaze_gpu_memory_bytes_max_allocated")
    return None if value is None else value / 2**20


def _post(url: str, payload: bytes, query: str = "") -> bool:
    files = {"image": ("upload.jpg", payload, "image/jpeg")}
    return httpx.post(f"{url}/dehaze{query}", files=files, timeout=REQUEST_TIMEOUT_S).status_code == 200


def run_cases(
    service: ServiceProcesses, args: argparse.Namespace, batch_size: int, names: Sequence[str]
) -> list[dict[str, Any]]:
    """Idle, then the cases ``names``, each with its own reset peak."""
    width, height = args.upload_size
    big = _jpeg(args, width, height)
    side = args.batch_image_size
    small = _jpeg(args, side, side)
    cases: dict[str, Callable[[], Any]] = {
        "upload": lambda: _post(service.url, big),
        "upload_json": lambda: _post(service.url, big, "?response=json"),
        "full_batch": lambda: (
            run_load(f"{service.url}/dehaze", small, batch_size, batch_size, "b.jpg").ok == batch_size
        ),
    }
    rows = [{"case": "idle", "name": "idle", **measure_case(service, lambda: True)}]
    for name in names:
        label = f"{name} {width}x{height}" if name.startswith("upload") else f"{name} {batch_size}x {side}x{side}"
        rows.append({"case": label, "name": name, **measure_case(service, cases[name])})
        print(f"  {label}: peak {rows[-1]['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    return rows


COLUMNS = [
    common.Column("max_batch_size", "max batch"),
    common.Column("case", "case"),
    common.Column("ok", "ok"),
    common.Column("seconds", "s", ".1f"),
    common.Column("rss_before_mib", "RSS before MiB", ".0f"),
    common.Column("peak_rss_mib", "peak RSS MiB", ".0f"),
    common.Column("forwards", "forwards", ".0f"),
    common.Column("mean_forward_batch", "mean fwd batch", ".2f"),
    common.Column("gpu_max_allocated_mib", "GPU max alloc MiB", ".0f"),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Start the service, run the cases, print the table, write the JSON; returns the results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    machine = common.machine_info(device, args.threads)
    settings = Settings()
    if args.max_batch_sizes is None:
        args.max_batch_sizes = [settings.batch_size_on(device.type)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        artifact = ensure_artifact(args.weights, Path(tmp) / f"{args.weights.stem}.ts.pt")
        for batch_size in args.max_batch_sizes:
            env = {
                "DEHAZE_WEIGHTS": str(args.weights),
                "DEHAZE_ARTIFACT": str(artifact),
                "DEHAZE_DEVICE": args.device,
                "DEHAZE_MAX_BATCH_SIZE": str(batch_size),
                "DEHAZE_MAX_BATCH_WAIT_MS": "2000",
                "DEHAZE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
                # the CPU's default compute budget (a 1080p photo) refuses 12 MP with 413; memory is what is measured
                "DEHAZE_MAX_COMPUTE_PIXELS": str(4 * args.upload_size[0] * args.upload_size[1]),
            }
            for index, name in enumerate(args.cases):  # a fresh process per case: see the module docstring
                with running_service("embedded", env, args.threads, args.startup_timeout) as service:
                    case_rows = run_cases(service, args, batch_size, [name])
                rows += [{"max_batch_size": batch_size, **row} for row in case_rows[(1 if index else 0) :]]
    print(common.format_table(rows, COLUMNS, title="server process memory (embedded: API + worker):"))
    megapixels = args.upload_size[0] * args.upload_size[1] / 1e6
    targets = [
        common.target(
            f"{megapixels:.1f} MP upload, max_batch_size {row['max_batch_size']}: peak RSS (GiB)",
            row["peak_rss_mib"] / 1024 if row["ok"] else None,
            "<=",
            2.0,
        )
        for row in rows
        if row["name"] == "upload"
    ]
    common.print_targets(targets)
    config = {
        "weights": str(args.weights),
        "upload_size": args.upload_size,
        "max_batch_sizes": args.max_batch_sizes,
        "tile_size": settings.tile_size,
        "tile_overlap": settings.tile_overlap,
        "peak": "VmHWM of a fresh server process per case, reset before the case via /proc/PID/clear_refs",
    }
    notes = [] if common.reset_peak_rss() else ["VmHWM could not be reset here: peaks are since process start"]
    common.write_report(args.out, "memory", machine, config, {"rows": rows}, targets, notes)
    print(f"wrote {args.out}")
    return {"rows": rows}


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
