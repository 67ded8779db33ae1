"""What a new input shape costs the traced artifact on the CPU, and what the kernel cache saves when shapes return.

    python -m tests.benchmarks.bench_kernel_cache --out runs/benchmarks/kernel_cache.json

``--shapes`` distinct padded shapes (a seeded sample of the 32-px buckets up to ``--max-side``) are computed in
turn, three passes over all of them, in a fresh process per configuration: oneDNN's default primitive cache (1,024
kernels, about ten shapes of our networks) and the service's (``model.kernel_cache``,
``DEHAZE_KERNEL_CACHE_SHAPES``, default 64 shapes), each in float32 and in the precision ``auto`` picks on this CPU.
The processes run one after another, alternating configurations over ``--rounds``. Reported per configuration:

- the time of each pass: pass 1 generates every shape's kernels; in pass 2 a shape comes back after all the others
  (a cache too small for them generates its kernels again); pass 3 likewise;
- ``revisit ×``: pass 2 with oneDNN's default over pass 2 with the service's cache, side by side;
- ``first ×``: the median over shapes of a shape's first forward over its pass-3 forward (what the first request
  of a new shape costs, when the cache keeps it);
- RSS growth over the passes (the cache's memory, with the activations' high-water mark).

The service warms its common shapes before it is ready (``service/worker/warm_up.py``), so requests at those never
pay the first-forward cost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.benchmarks import common

CONFIGS = {"onednn-default": "0", "service": None}  # DEHAZE_KERNEL_CACHE_SHAPES: 0 = oneDNN's own; None = ours


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench_kernel_cache", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "kernel_cache")
    parser.add_argument("--shapes", type=int, default=60, help="distinct padded shapes (default 60)")
    parser.add_argument("--max-side", type=int, default=320, help="largest padded side (default 320)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per configuration (default 1)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "auto"], help="precisions (default float32 auto)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # an artifact: time it in this process
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def sample_shapes(count: int, max_side: int, seed: int, multiple: int = 32) -> list[tuple[int, int]]:
    """``count`` distinct (height, width) buckets up to ``max_side``, in a seeded order."""
    sides = range(multiple, max_side + 1, multiple)
    shapes = [(h, w) for h in sides for w in sides]
    random.Random(seed).shuffle(shapes)
    if count > len(shapes):
        raise ValueError(f"only {len(shapes)} shapes up to {max_side} px, asked for {count}")
    return shapes[:count]


def time_passes(artifact: Path, shapes: Sequence[tuple[int, int]], threads: int) -> dict[str, Any]:
    """In this process: the service's warm-up, then three passes over ``shapes`` (seconds per forward, RSS)."""
    import numpy as np
    import torch

    from model.kernel_cache import size_kernel_cache
    from service.config import Settings
    from service.worker.runner import Runner
    from service.worker.warm_up import warm_up

    size_kernel_cache()
    common.setup_torch(threads, "cpu")
    runner = Runner.from_artifact(artifact, device="cpu")
    warm_up(runner, Settings(warm_up_sizes=""))
    rss0 = common.rss_bytes()
    passes: list[list[float]] = []
    for _ in range(3):
        seconds = []
        for height, width in shapes:
            image = np.random.default_rng(height * 10_000 + width).random((height, width, 3), dtype=np.float32)
            start = time.perf_counter()
            runner.run_items([image])
            seconds.append(time.perf_counter() - start)
        passes.append(seconds)
    return {
        "passes_s": [sum(p) for p in passes],
        "first_ratio": statistics.median(a / c for a, c in zip(passes[0], passes[2], strict=True)),
        "rss_growth_mib": (common.rss_bytes() - rss0) / 2**20,
        "dtype": runner.dtype,
        "torch_threads": torch.get_num_threads(),
        "onednn_capacity": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "oneDNN default (1024)"),
    }


def run_child(args: argparse.Namespace, artifact: Path, config: str) -> dict[str, Any]:
    """One fresh process timing ``artifact`` with the cache configuration ``config``."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if CONFIGS[config] is not None:
        env["DEHAZE_KERNEL_CACHE_SHAPES"] = str(CONFIGS[config])
    else:
        env.pop("DEHAZE_KERNEL_CACHE_SHAPES", None)
    argv = [sys.executable, "-m", "tests.benchmarks.bench_kernel_cache", "--child", str(artifact)]
    argv += ["--shapes", str(args.shapes), "--max-side", str(args.max_side), "--seed", str(args.seed)]
    argv += ["--threads", str(args.threads)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def export_artifacts(args: argparse.Namespace, folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The weights traced in each ``--dtypes`` precision as the service exports them (``auto`` resolved here)."""
    from model.precision import artifact_dtype_for

    pipeline, info = common.load_pipeline(args.weights)
    artifacts: dict[str, Path] = {}
    for requested in args.dtypes:
        dtype = artifact_dtype_for(requested, "cpu")
        if dtype not in artifacts:
            artifacts[dtype] = common.export_traced(pipeline, folder, info["variant"], dtype)
    return artifacts, info


def summarise(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (precision, configuration): medians over rounds, and the revisit ratio against oneDNN's."""
    rows = []
    for (dtype, config), results in runs.items():
        passes = [statistics.median(r["passes_s"][i] for r in results) for i in range(3)]
        baseline = runs.get((dtype, "onednn-default"))
        revisit = None
        if baseline:
            pairs = zip(baseline, results, strict=True)
            revisit = statistics.median(b["passes_s"][1] / r["passes_s"][1] for b, r in pairs)
        rows.append({
            "dtype": dtype, "cache": config, "capacity": results[0]["onednn_capacity"],
            "pass1_s": passes[0], "pass2_s": passes[1], "pass3_s": passes[2], "revisit_x": revisit,
            "first_x": statistics.median(r["first_ratio"] for r in results),
            "rss_mib": statistics.median(r["rss_growth_mib"] for r in results),
        })  # fmt: skip
    return rows


COLUMNS = [
    common.Column("dtype", "dtype", "s"),
    common.Column("cache", "cache", "s"),
    common.Column("capacity", "kernels", "s"),
    common.Column("pass1_s", "pass 1 s", ".2f"),
    common.Column("pass2_s", "pass 2 s", ".2f"),
    common.Column("pass3_s", "pass 3 s", ".2f"),
    common.Column("revisit_x", "revisit ×", ".2f"),
    common.Column("first_x", "first ×", ".2f"),
    common.Column("rss_mib", "RSS +MiB", ".0f"),
]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one timed process) and print its table."""
    args = parse_args(argv)
    shapes = sample_shapes(args.shapes, args.max_side, args.seed)
    if args.child is not None:
        print(json.dumps(time_passes(args.child, shapes, args.threads)))
        return
    device = common.setup_torch(args.threads, "cpu")
    machine = common.machine_info(device, args.threads)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        artifacts, info = export_artifacts(args, Path(folder))
        for round_index in range(args.rounds):
            order = list(CONFIGS) if round_index % 2 == 0 else list(reversed(CONFIGS))
            for dtype, artifact in artifacts.items():
                for config in order:
                    runs.setdefault((dtype, config), []).append(run_child(args, artifact, config))
    rows = summarise(runs)
    print(common.format_table(rows, COLUMNS, f"{len(shapes)} shapes up to {args.max_side} px, {info['variant']}"))
    config = {**vars(args), "shapes": shapes, "variant": info["variant"], "weights": info["weights"]}
    config.pop("child")
    path = common.write_report(args.out, "kernel_cache", machine, config, {"rows": rows, "runs": list(runs.items())})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
