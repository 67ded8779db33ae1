"""Model variants side by side: the traced artifact of each weights file, batch 1, in the same rounds.

    python -m tests.benchmarks.bench_variants --weights model/weights/dcmpnet_small.pt model/weights/dcmpnet_t.pt \
        --out runs/benchmarks/variants.json

Compares two or more weights files (default ``dcmpnet_small`` and ``dcmpnet_t``, the serving default) as the worker
runs them: each file's pipeline is exported per precision (``model.export``, as bench_model does), loaded with
``Runner.from_artifact`` and timed in bench_model's ``traced_b1`` mode (batch 1 through the ``Runner``, host float
array in -> host float array out). Every round runs every (weights, dtype) once over the same images, in turn,
after one untimed warm-up round (the TorchScript executor specialises on its first calls), so a change of machine
load hits all of them alike.

Reported per size and (weights, dtype): the variant, its parameters (Φ + Ψ), GMACs per image
(``model.summary.pipeline_gmac`` at the image's size), the median images/s over the rounds, ``× FIRST latency``
(the median over rounds of this file's seconds / the first file's seconds at the same dtype in the same round;
above 1 is slower) and PSNR against GT. Target: the second file's ``× FIRST latency`` at most 1.5, per size and
dtype (the new default at most 1.5× ``dcmpnet_small``'s CPU latency).

``--dtypes`` as in bench_model: fp32 plus the device's ``auto`` precision by default (bf16 on a CPU with native
bfloat16); bf16 is allowed on any CPU when asked, fp16 only on CUDA. Images as in bench_model: ``sots`` = the
SOTS-indoor hazy scenes of ``--scenes`` (default the validation scenes 1430 and 1431) at their own 620×460,
``1080p`` = the same resized to 1920×1080 (bicubic), ``HxW`` = resized to that size.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.pipeline import DehazePipeline
from model.precision import artifact_dtype_for
from model.summary import count_params, pipeline_gmac
from service.worker.runner import Runner
from tests.benchmarks import common
from tests.benchmarks.bench_model import (
    DTYPE_NAMES,
    LARGE_PIXELS,
    ModeFn,
    add_image_arguments,
    device_name,
    run_rounds,
    timed_dtypes,
    traced_batched,
)
from training.metrics import mean_finite_psnr, psnr

DEFAULT_WEIGHTS = [Path("model/weights/dcmpnet_small.pt"), Path("model/weights/dcmpnet_t.pt")]
LATENCY_TARGET = 1.5  # the second file's latency at most 1.5× the first's (issue: dcmpnet_t vs dcmpnet_small)
MODE = "traced_b1"
Images = list[np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One weights file: its label in the table (the variant, with the file name when two files hold the same
    variant), the variant, the file, the eager pipeline (CPU) and its parameter count (Φ + Ψ)."""

    label: str
    variant: str
    weights: Path
    pipeline: DehazePipeline
    params: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (``--weights`` takes several files; the ratios are against the first)."""
    parser = argparse.ArgumentParser(
        prog="bench_variants", description=__doc__.split("\n")[0], conflict_handler="resolve"
    )
    common.add_common_arguments(parser, "variants")
    parser.add_argument(
        "--weights",
        type=Path,
        nargs="+",
        default=DEFAULT_WEIGHTS,
        help="checkpoints to compare, ratios against the first (default: dcmpnet_small.pt dcmpnet_t.pt)",
    )
    add_image_arguments(parser)
    args = parser.parse_args(argv)
    if len(args.weights) < 2:
        parser.error("--weights needs at least two files to compare")
    if min(args.images, args.large_images, args.rounds) < 1:
        parser.error("--images, --large-images and --rounds must be >= 1")
    return args


# -- the candidates --------------------------------------------------------------------------------------------
def load_candidates(weights: Sequence[Path]) -> list[Candidate]:
    """The pipeline of every weights file, labelled by its variant (plus the file name where variants repeat)."""
    loaded = [(path, *common.load_pipeline(path)) for path in weights]
    variants = [source["variant"] for _, _, source in loaded]
    return [
        Candidate(
            label=variant if variants.count(variant) == 1 else f"{variant} ({path.name})",
            variant=variant,
            weights=Path(path),
            pipeline=pipeline,
            params=count_params(pipeline),
        )
        for (path, pipeline, _), variant in zip(loaded, variants, strict=True)
    ]


def mode_name(candidate: Candidate, dtype: str) -> str:
    """The name of a (weights, dtype) in the rounds and the progress lines."""
    return f"{candidate.label}[{dtype}]"


def build_modes(
    candidates: Sequence[Candidate], dtypes: Sequence[str], folder: Path, device: torch.device
) -> dict[str, ModeFn]:
    """``traced_b1`` per (weights, dtype), in the order the rounds run them: per dtype, every file in turn.

    Each file's artifacts go to their own subfolder of ``folder``, so two files of one variant do not collide.
    """
    modes: dict[str, ModeFn] = {}
    for dtype in dtypes:
        for index, candidate in enumerate(candidates):
            artifact_dtype = artifact_dtype_for(DTYPE_NAMES[dtype], device.type)
            artifact = common.export_traced(candidate.pipeline, folder / str(index), candidate.variant, artifact_dtype)
            runner = Runner.from_artifact(artifact, device=str(device), dtype=DTYPE_NAMES[dtype])
            modes[mode_name(candidate, dtype)] = traced_batched(runner, 1)
    return modes


# -- one size ----------------------------------------------------------------------------------------------------
def size_images(text: str, scenes: Sequence[common.Scene], args: argparse.Namespace) -> tuple[str, Images, Images]:
    """The size's label, hazy inputs and GT (``--large-images`` scenes above 1 MP, ``--images`` up to it)."""
    size = common.parse_size(text)
    large = size is not None and size[0] * size[1] > LARGE_PIXELS
    images, gts = common.prepare_images(scenes[: args.large_images if large else args.images], size)
    height, width = images[0].shape[:2]
    return (f"{text} {width}x{height}" if size is None else f"{width}x{height}"), images, gts


def summarize_size(
    label: str,
    candidates: Sequence[Candidate],
    dtypes: Sequence[str],
    gts: Images,
    measured: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per (weights, dtype): images/s, latency against the first file at that dtype, MACs and PSNR."""
    seconds, outputs = measured["seconds"], measured["outputs"]
    height, width = gts[0].shape[:2]
    gmacs = {c.label: pipeline_gmac(c.pipeline, (height, width)) for c in candidates}
    rows = []
    for dtype in dtypes:
        first = seconds[mode_name(candidates[0], dtype)]
        for candidate in candidates:
            times = seconds[mode_name(candidate, dtype)]
            per_round = [len(gts) / t for t in times]
            ips = statistics.median(per_round)
            outs = outputs[mode_name(candidate, dtype)]
            rows.append(
                {
                    "size": label,
                    "variant": candidate.label,
                    "weights": str(candidate.weights),
                    "dtype": dtype,
                    "mode": MODE,
                    "params": candidate.params,
                    "gmac_per_image": gmacs[candidate.label],
                    "images": len(gts),
                    "images_per_s": ips,
                    "images_per_s_rounds": per_round,
                    "s_per_image": 1.0 / ips,
                    "latency_ratio": statistics.median(t / f for t, f in zip(times, first, strict=True)),
                    "psnr_vs_gt_db": mean_finite_psnr(psnr(o, g) for o, g in zip(outs, gts, strict=True)),
                }
            )
    return rows


def columns(first: str) -> list[common.Column]:
    """The printed table; the ratio's header names the first file's variant."""
    return [
        common.Column("size", "size"),
        common.Column("variant", "variant"),
        common.Column("dtype", "dtype"),
        common.Column("params", "params Φ+Ψ", ","),
        common.Column("gmac_per_image", "GMAC/img", ".2f"),
        common.Column("images_per_s", "img/s", ".3f"),
        common.Column("s_per_image", "s/img", ".3f"),
        common.Column("latency_ratio", f"× {first} latency", ".2f"),
        common.Column("psnr_vs_gt_db", "PSNR GT dB", ".2f"),
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the JSON document's results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    args.dtypes = timed_dtypes(args.dtypes, device)
    machine = common.machine_info(device, args.threads)
    candidates = load_candidates(args.weights)
    scenes = common.load_sots(args.data, max(args.images, args.large_images), args.scenes)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_variants_") as tmp:
        modes = build_modes(candidates, args.dtypes, Path(tmp), device)
        for text in args.sizes:
            label, images, gts = size_images(text, scenes, args)
            print(f"{label}: {len(images)} images, {args.rounds} rounds + warm-up", file=sys.stderr, flush=True)
            rows += summarize_size(label, candidates, args.dtypes, gts, run_rounds(modes, images, args.rounds, device))
    title = f"variants: {MODE} on {device_name(machine)}"
    print(common.format_table(rows, columns(candidates[0].label), title=title))
    targets = _targets(rows, candidates)
    common.print_targets(targets)
    config = {
        "weights": [str(c.weights) for c in candidates],
        "variants": [c.label for c in candidates],
        "baseline": candidates[0].label,
        "mode": MODE,
        "dtypes": args.dtypes,
        "scenes": args.scenes,
        "sizes": args.sizes,
        "images_per_size": args.images,
        "images_per_large_size": args.large_images,
        "rounds": args.rounds,
    }
    results = {"rows": rows}
    common.write_report(args.out, "variants", machine, config, results, targets, _notes(candidates[0]))
    print(f"wrote {args.out}")
    return results


def _targets(rows: list[dict[str, Any]], candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    """The second file's latency at most ``LATENCY_TARGET``× the first's, per size and dtype."""
    first, second = candidates[0].label, candidates[1].label
    return [
        common.target(
            f"{row['size']} {second}[{row['dtype']}] / {first} latency", row["latency_ratio"], "<=", LATENCY_TARGET
        )
        for row in rows
        if row["variant"] == second
    ]


def _notes(first: Candidate) -> list[str]:
    return [
        "each round runs every (weights, dtype) in turn on the same images, after one untimed warm-up round",
        f"latency_ratio: median over rounds of seconds / {first.label}'s seconds at the same dtype (above 1: slower)",
    ]


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
