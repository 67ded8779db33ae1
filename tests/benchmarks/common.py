"""Helpers shared by the benchmarks: arguments, torch set-up, the machine, timing, tables, JSON, RSS and data.

Every benchmark writes one JSON document of the same shape (:func:`write_report`)::

    {"benchmark": name, "created": ISO time, "command": argv, "machine": {...}, "config": {...},
     "results": {...}, "targets": [{"name", "value", "op", "limit", "met"}], "notes": [...]}

``machine`` names the CPU model (``/proc/cpuinfo``), the core count, the torch thread count actually set, the torch
version, the CUDA device when one is used, and the load average before and after the run: figures taken while
other processes competed for the CPU are only good for ratios measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from commands.allocator import ENV_SWITCH, tune_for_inference
from model.checkpoint import DEFAULT_WEIGHTS, load_pipeline_from_weights
from model.device import resolve_device
from model.export import export_pipeline
from model.pipeline import DehazePipeline, build_pipeline
from service.codec import decode_image

__all__ = [
    "CPU",
    "DATA_ROOT",
    "SOTS_FOLDER",
    "Column",
    "Scene",
    "add_common_arguments",
    "export_traced",
    "format_table",
    "load_pipeline",
    "load_sots",
    "loadavg",
    "machine_info",
    "parse_size",
    "peak_rss_bytes",
    "percentiles_ms",
    "prepare_images",
    "print_targets",
    "read_proc_status",
    "reset_peak_rss",
    "resize01",
    "rss_bytes",
    "self_peak_rss_bytes",
    "setup_torch",
    "sync",
    "target",
    "timed",
    "write_report",
]

DATA_ROOT = Path("../shared/datasets")
"""The project's data, relative to the repository root (the benchmarks are run from there)."""
SOTS_FOLDER = "sots-indoor-train"
VALIDATION_SCENES = ("1430", "1431")  # data.val_scenes of the shipped model's configs: never trained on
CPU = torch.device("cpu")

T = TypeVar("T")


# -- arguments and set-up ----------------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--weights``, ``--threads``, ``--device``, ``--data`` and ``--out`` (default runs/benchmarks/NAME.json)."""
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="checkpoint (default: shipped weights)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, set explicitly (default 2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = CUDA if present")
    parser.add_argument("--data", type=Path, default=DATA_ROOT, help="datasets folder (default ../shared/datasets)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks") / f"{name}.json", help="JSON to write")


def setup_torch(threads: int, device: str) -> torch.device:
    """Set torch's CPU thread count (must be >= 1) and resolve ``device`` (``auto`` = CUDA when available)."""
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    tune_for_inference()  # as the ``dehaze`` command does for the service
    return resolve_device(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty when /proc is not there)."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    """What the figures were measured on (the CUDA fields are None on a CPU)."""
    cuda = device.type == "cuda"
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": threads,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "cuda_device_name": torch.cuda.get_device_name(device) if cuda else None,
        "cuda_version": torch.version.cuda if cuda else None,
        "loadavg_start": loadavg(),
        "malloc": os.environ.get(ENV_SWITCH, "1") + f" ({ENV_SWITCH}; 1 = commands.allocator settings)",
    }


# -- timing --------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on the CPU), so wall times cover the computation."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``function()`` and its wall time in seconds, synchronised on CUDA before and after."""
    sync(device)
    started = time.perf_counter()
    result = function()
    sync(device)
    return result, time.perf_counter() - started


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """n, mean, min, max and p50/p95/p99 (linear interpolation) in milliseconds."""
    if not seconds:
        raise ValueError("no timings")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": len(ms),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
    }


# -- tables and JSON -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column of a printed table: the row key, its header and a format spec (e.g. ``.2f``)."""

    key: str
    header: str
    spec: str = ""


def _cell(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if spec else str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], title: str = "") -> str:
    """A fixed-width text table (first column left-aligned, the others right-aligned)."""
    cells = [[_cell(row.get(c.key), c.spec) for c in columns] for row in rows]
    widths = [max([len(c.header)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        return "  ".join([first, *(v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))])

    out = [title] if title else []
    out += [line([c.header for c in columns]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out) + "\n"


def target(name: str, value: float | None, op: str, limit: float) -> dict[str, Any]:
    """A target check for the report: ``value op limit`` with ``op`` one of ``>=``, ``<=``."""
    if op not in (">=", "<="):
        raise ValueError(f"unknown op {op!r}")
    met = None if value is None else (value >= limit if op == ">=" else value <= limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "met": met}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def write_report(
    path: Path,
    name: str,
    machine: dict[str, Any],
    config: dict[str, Any],
    results: dict[str, Any],
    targets: Iterable[dict[str, Any]] = (),
    notes: Iterable[str] = (),
) -> Path:
    """Write the benchmark's JSON document (non-finite floats become null) and return its path."""
    document = {
        "benchmark": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": {**machine, "loadavg_end": loadavg()},
        "config": config,
        "results": results,
        "targets": list(targets),
        "notes": list(notes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(document), indent=2) + "\n", encoding="utf-8")
    return path


def print_targets(targets: Iterable[dict[str, Any]]) -> None:
    """One line per target: name, value, limit and whether it is met."""
    for t in targets:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.4g}"
        print(f"target {t['name']}: {value} {t['op']} {t['limit']:g} -> {verdict}")


# -- memory --------------------------------------------------------------------------------------------------------
def read_proc_status(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (e.g. ``VmHWM``, ``VmRSS``) in bytes.

    Raises:
        KeyError: the field is missing.
        OSError: the process does not exist.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident set size (``VmHWM``) of a process since it started or since :func:`reset_peak_rss`."""
    return read_proc_status(pid, "VmHWM")


def rss_bytes(pid: int | str = "self") -> int:
    """Current resident set size (``VmRSS``) of a process."""
    return read_proc_status(pid, "VmRSS")


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset ``VmHWM`` to the current RSS (writes 5 to ``/proc/PID/clear_refs``); False where not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def self_peak_rss_bytes() -> int:
    """Peak RSS of this process since it started (``ru_maxrss``; not reset by :func:`reset_peak_rss`)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# -- data and models -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """One SOTS pair: the hazy image and its clear ground truth, H×W×3 float32 in [0, 1]."""

    name: str
    hazy: np.ndarray
    gt: np.ndarray


def load_sots(data: Path, count: int, scenes: Sequence[str] | None = None) -> list[Scene]:
    """The first ``count`` hazy SOTS-indoor images (sorted by name; of ``scenes`` only, when given) with their GT,
    decoded as the service does.

    Raises:
        FileNotFoundError: the folder or a GT image is missing.
    """
    folder = Path(data) / SOTS_FOLDER
    hazy_paths = sorted(
        p for p in (folder / "hazy").glob("*.*") if scenes is None or p.stem.split("_", 1)[0] in set(scenes)
    )[:count]
    if not hazy_paths:
        raise FileNotFoundError(f"no hazy images under {folder / 'hazy'}")
    scenes = []
    for path in hazy_paths:
        gt_path = next((folder / "GT").glob(f"{path.stem.split('_', 1)[0]}.*"), None)
        if gt_path is None:
            raise FileNotFoundError(f"no GT image for {path}")
        hazy, gt = (decode_image(p.read_bytes(), 1 << 30) for p in (path, gt_path))
        scenes.append(Scene(path.stem, hazy, gt))
    return scenes


def resize01(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An H×W×3 [0, 1] float image resized (bicubic, via 8 bits) to ``height``×``width``."""
    as_uint8 = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))
    resized = as_uint8.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float32) / 255.0


def parse_size(text: str) -> tuple[int, int] | None:
    """``sots`` -> None (the scenes' own 620×460), ``1080p`` -> (1080, 1920), ``HxW`` -> (H, W)."""
    if text == "sots":
        return None
    if text == "1080p":
        return 1080, 1920
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be sots, 1080p or HxW, got {text!r}") from None
    return height, width


def prepare_images(scenes: Sequence[Scene], size: tuple[int, int] | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hazy inputs and GT of ``scenes`` at their own size (None) or resized to ``size``."""
    if size is None:
        return [s.hazy for s in scenes], [s.gt for s in scenes]
    return [resize01(s.hazy, *size) for s in scenes], [resize01(s.gt, *size) for s in scenes]


def _variant_in(weights: Path) -> str | None:
    raw = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "variant" in raw:
        return str(raw["variant"])
    return "dcmpnet" if isinstance(raw, dict) and "dehaze_net" in raw else None


def load_pipeline(weights: Path, variant: str | None = None) -> tuple[DehazePipeline, dict[str, str]]:
    """The eager pipeline from ``weights``, or a random-initialised ``variant`` when the weights hold another one.

    Speed does not depend on weight values, so a variant without trained weights (e.g. the paper-size
    ``dcmpnet``) is timed random-initialised; its PSNR figures then mean nothing, which the returned info says.

    Returns:
        The pipeline (eval mode) and ``{"variant", "weights"}`` (``weights`` is ``random-init`` in that case).

    Raises:
        FileNotFoundError: the weights file is missing and no variant was named.
    """
    weights = Path(weights)
    if weights.is_file():
        stored = _variant_in(weights)
        if variant is None or variant == stored:
            return load_pipeline_from_weights(weights), {"variant": str(stored), "weights": str(weights)}
    elif variant is None:
        raise FileNotFoundError(
            f"weights file not found: {weights}; pass --weights, or --variant to time random-initialised networks"
        )
    return build_pipeline(str(variant)), {"variant": str(variant), "weights": "random-init"}


def export_traced(pipeline: DehazePipeline, folder: Path, variant: str, dtype: str = "float32") -> Path:
    """Trace and freeze ``pipeline`` in ``dtype`` as the service does (``model.export.export_pipeline``) into
    ``folder``."""
    return export_pipeline(pipeline, Path(folder) / f"{variant}.{dtype}.ts.pt", dtype=dtype)
