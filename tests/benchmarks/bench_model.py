"""Model path: the authors' evaluation (eager, one image at a time, fp32) against our traced, batched pipeline.

    python -m tests.benchmarks.bench_model --out runs/benchmarks/model.json

Same variant, same weights, same images, measured side by side: every round runs every mode once over the same
images, in turn, so a change of machine load hits all modes alike; the first round is an untimed warm-up (the
TorchScript executor specialises on its first calls). Reported per mode: the median images/s over the rounds,
and the ratio to the baseline, the median of the per-round ratios.

Modes (the timed region of each is host float array in -> host float array out, so copies count everywhere):
    ``eager_b1``: the authors' protocol (DCMPNET.md §4): the eager pipeline, batch 1, fp32, under ``no_grad``,
        in a child process with glibc's default malloc (``tests.benchmarks.baseline``).
    ``eager_b1_tuned``: the same in this process, under the service's malloc settings (``commands.allocator``),
        which every mode below uses too: it splits the gain into the allocator's and the tracing's share.
    ``traced_b1``: the TorchScript artifact (``model.export``), batch 1, through the worker's ``Runner``.
    ``traced_batched``: the artifact on batches of ``--batch-size`` whole images (same-size images stack).
    ``service_path``: exactly what the worker does with these images: ``ImagePlan`` (tiles of ``tile_size`` or
        bucket padding), pieces of all images grouped by shape into forwards of ``--batch-size``, stitching.
With ``--dtypes`` the three traced modes run per precision, as the worker runs it (``model.precision``): on CUDA
``bf16``/``fp16`` autocast over the float32 artifact; on the CPU ``bf16`` is the bfloat16 artifact (fp16 is not
offered there). The default is fp32 plus the device's ``auto`` precision when that differs (bf16 on a CPU with
native bfloat16). Each reduced-precision row also has ``× fp32``, the median per-round ratio to the same mode in
fp32, side by side in the same rounds.

Images: ``sots`` = SOTS-indoor hazy scenes of ``--scenes`` (default the validation scenes 1430 and 1431, never
trained on) at their own 620×460; ``1080p`` = the same scenes resized to 1920×1080
(bicubic); ``HxW`` = resized to that size. PSNR per mode is against the GT (resized alike) and against the
eager output (agreement; shows what bf16/fp16 or tiling change). MACs come from ``model.summary.pipeline_gmac``
(``FlopCounterMode`` on the meta device, MACs = FLOPs / 2) at each image's size; ``gmac_per_s`` counts the useful
MACs of the whole image, so tiling overhead lowers it. ``peak_share`` divides the MAC rate by the peak:
``--peak-tflops`` (the spec sheet's dense figure for the dtype) when given, else a dense matmul measured here at
that dtype (on CUDA, fp32 convolutions may run as TF32, torch's cuDNN default, so give the spec figure there).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.precision import artifact_dtype_for, resolve_dtype
from model.summary import pipeline_gmac
from service.config import Settings
from service.worker.batching import group_by_shape
from service.worker.plan import ImagePlan
from service.worker.runner import Runner
from tests.benchmarks import common
from tests.benchmarks.baseline import BaselineProcess, eager_one_at_a_time
from training.metrics import mean_finite_psnr, psnr

BASELINE = "eager_b1"
TUNED_EAGER = "eager_b1_tuned"
LARGE_PIXELS = 1_000_000  # sizes above this take --large-images scenes
CPU_SPEEDUP_TARGET = 1.5  # the default CPU precision against fp32, traced, per size
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SHORT_NAMES = {name: short for short, name in DTYPE_NAMES.items()}  # float32 -> fp32
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Images = list[np.ndarray]
ModeFn = Callable[[Images], Images]


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dtypes``, ``--scenes``, ``--sizes``, ``--images``, ``--large-images`` and ``--rounds``: what is timed on
    which images (this benchmark's and ``bench_variants``')."""
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=sorted(DTYPE_NAMES),
        default=None,
        help="precisions to time (default: fp32 and the device's auto precision; fp16 is CUDA only)",
    )
    parser.add_argument(
        "--scenes", nargs="+", default=list(common.VALIDATION_SCENES), help="SOTS scenes of the images (validation)"
    )
    parser.add_argument("--sizes", nargs="+", default=["sots", "1080p"], help="sots, 1080p or HxW")
    parser.add_argument("--images", type=int, default=4, help="SOTS scenes per size up to 1 MP (default 4)")
    parser.add_argument("--large-images", type=int, default=2, help="scenes per size over 1 MP, e.g. 1080p (2)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up round (default 2)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: service settings for batch and tiles)."""
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="bench_model", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "model")
    parser.add_argument("--variant", help="variant to time; random-initialised if --weights holds another one")
    add_image_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles a forward in the service_path mode (default: the service's: 8 on CUDA, 1 on the CPU)",
    )
    parser.add_argument(
        "--batched-size", type=int, default=4, help="images a forward in the traced_batched mode (default 4)"
    )
    parser.add_argument("--tile-size", type=int, default=defaults.tile_size)
    parser.add_argument("--tile-overlap", type=int, default=defaults.tile_overlap)
    parser.add_argument("--bucket-multiple", type=int, default=defaults.bucket_multiple)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak TFLOP/s for the dtype (spec)")
    args = parser.parse_args(argv)
    if min(args.images, args.large_images, args.rounds, args.batch_size or 1, args.batched_size) < 1:
        parser.error("--images, --large-images, --rounds and --batch-size must be >= 1")
    return args


# -- the modes ---------------------------------------------------------------------------------------------------
def eager_b1(pipeline: torch.nn.Module, device: torch.device) -> ModeFn:
    """The authors' protocol in this process (so under the service's malloc settings)."""
    return lambda images: eager_one_at_a_time(pipeline, images, device)


def traced_batched(runner: Runner, batch_size: int) -> ModeFn:
    """Whole images through the artifact, ``batch_size`` at a time (batch 1 gives ``traced_b1``)."""

    def run(images: Images) -> Images:
        outputs: Images = []
        for start in range(0, len(images), batch_size):
            dehazed, _ = runner.forward(np.stack(images[start : start + batch_size]))
            outputs.extend(dehazed)
        return outputs

    return run


def service_path(runner: Runner, batch_size: int, tile_size: int, overlap: int, multiple: int) -> ModeFn:
    """The worker's path for a batch of these images: plan, group pieces by shape, forward, stitch."""

    def run(images: Images) -> Images:
        plans = [ImagePlan(image, tile_size, overlap, multiple) for image in images]
        pieces = [(plan, piece) for plan in plans for piece in plan.pieces]
        for group in group_by_shape(pieces, lambda item: item[1].shape, batch_size):
            outputs = runner.run_items([piece.pixels(plan.image) for plan, piece in group])
            for (plan, piece), output in zip(group, outputs, strict=True):
                if isinstance(output, Exception):
                    raise output
                plan.add(piece, *output)
        return [plan.outputs()[0] for plan in plans]

    return run


def build_modes(
    pipeline: torch.nn.Module,
    artifacts: dict[str, Path],
    device: torch.device,
    baseline: ModeFn,
    args: argparse.Namespace,
) -> dict[str, ModeFn]:
    """The baseline, the eager path in this process, and per dtype the three traced modes (``artifacts``: the
    artifact each dtype's runner loads).

    Names get ``[dtype]`` when not fp32. The baseline is a ``BaselineProcess`` (glibc's default malloc, as the
    authors' script would run); every other mode runs here under the service's settings (``commands.allocator``),
    so ``eager_b1_tuned`` separates the allocator's share of the gain from the tracing's.
    """
    modes: dict[str, ModeFn] = {BASELINE: baseline, TUNED_EAGER: eager_b1(pipeline, device)}
    for dtype in args.dtypes:
        runner = Runner.from_artifact(artifacts[dtype], device=str(device), dtype=DTYPE_NAMES[dtype])
        suffix = "" if dtype == "fp32" else f"[{dtype}]"
        service_batch = args.batch_size or Settings().batch_size_on(device.type)
        traced = {
            f"traced_b1{suffix}": traced_batched(runner, 1),
            f"traced_batched{suffix}": traced_batched(runner, args.batched_size),
            f"service_path{suffix}": service_path(
                runner, service_batch, args.tile_size, args.tile_overlap, args.bucket_multiple
            ),
        }
        modes.update(traced)
    return modes


# -- MACs and peak ---------------------------------------------------------------------------------------------------
def measured_peak_tflops(device: torch.device, dtype: str) -> float:
    """Dense matmul TFLOP/s at ``dtype`` on ``device`` (best of a few runs): a practical peak."""
    n = 8192 if device.type == "cuda" else 1024
    torch_dtype = _TORCH_DTYPES[dtype]
    a = torch.rand(n, n, device=device, dtype=torch_dtype)
    b = torch.rand(n, n, device=device, dtype=torch_dtype)
    best = float("inf")
    for _ in range(5):
        _, seconds = common.timed(lambda: torch.mm(a, b), device)
        best = min(best, seconds)
    return 2 * n**3 / best / 1e12


# -- one size --------------------------------------------------------------------------------------------------
def run_rounds(modes: dict[str, ModeFn], images: Images, rounds: int, device: torch.device) -> dict[str, Any]:
    """A warm-up round, then ``rounds`` timed rounds of every mode in turn; seconds per round and last outputs."""
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    outputs: dict[str, Images] = {}
    for round_index in range(rounds + 1):
        for name, mode in modes.items():
            result, elapsed = common.timed(lambda mode=mode: mode(images), device)
            elapsed = getattr(mode, "last_seconds", elapsed)  # a child process's own forward time
            if round_index > 0:
                seconds[name].append(elapsed)
            outputs[name] = result
            print(f"  round {round_index} {name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
    return {"seconds": seconds, "outputs": outputs}


def summarize_size(
    label: str,
    images: Images,
    gts: Images,
    measured: dict[str, Any],
    macs: dict[str, float],
    peaks: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per mode: images/s, ratio to the baseline, PSNR, MAC rate and share of the peak."""
    seconds, outputs = measured["seconds"], measured["outputs"]
    rows = []
    for name, times in seconds.items():
        dtype = name.split("[")[1].rstrip("]") if "[" in name else "fp32"
        fp32_times = seconds.get(name.split("[")[0]) if dtype != "fp32" else None
        per_round = [len(images) / t for t in times]
        ratios = [b / t for b, t in zip(seconds[BASELINE], times, strict=True)]
        ips = statistics.median(per_round)
        rate = ips * macs["per_image"]
        rows.append(
            {
                "size": label,
                "mode": name,
                "dtype": dtype,
                "images": len(images),
                "images_per_s": ips,
                "images_per_s_rounds": per_round,
                "s_per_image": 1.0 / ips,
                "ratio_vs_eager": statistics.median(ratios),
                "ratio_vs_fp32": (
                    statistics.median(f / t for f, t in zip(fp32_times, times, strict=True)) if fp32_times else None
                ),
                "psnr_vs_gt_db": mean_finite_psnr(psnr(o, g) for o, g in zip(outputs[name], gts, strict=True)),
                "psnr_vs_eager_db": mean_finite_psnr(
                    psnr(o, e) for o, e in zip(outputs[name], outputs[BASELINE], strict=True)
                ),
                "gmac_per_image": macs["per_image"],
                "gmac_per_s": rate,
                "peak_share": 2 * rate / (peaks[dtype] * 1000.0) if dtype in peaks else None,
            }
        )
    return rows


COLUMNS = [
    common.Column("size", "size"),
    common.Column("mode", "mode"),
    common.Column("images_per_s", "img/s", ".3f"),
    common.Column("s_per_image", "s/img", ".3f"),
    common.Column("ratio_vs_eager", "× eager", ".2f"),
    common.Column("ratio_vs_fp32", "× fp32", ".2f"),
    common.Column("psnr_vs_gt_db", "PSNR GT dB", ".2f"),
    common.Column("psnr_vs_eager_db", "PSNR eager dB", ".1f"),
    common.Column("gmac_per_s", "GMAC/s", ".1f"),
    common.Column("peak_share", "peak share", ".1%"),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the JSON document's results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    args.dtypes = timed_dtypes(args.dtypes, device)
    machine = common.machine_info(device, args.threads)
    torch.manual_seed(0)  # as BaselineProcess does: the same random-initialised weights in both processes
    pipeline, source = common.load_pipeline(args.weights, args.variant)
    pipeline = pipeline.to(device).eval()
    peaks = {d: args.peak_tflops or measured_peak_tflops(device, d) for d in args.dtypes}
    scenes = common.load_sots(args.data, max(args.images, args.large_images), args.scenes)
    rows: list[dict[str, Any]] = []
    baseline = BaselineProcess(args.weights, args.variant, args.threads, device)
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp, contextlib.closing(baseline):
        artifacts = {
            dtype: common.export_traced(
                pipeline.cpu(), Path(tmp), source["variant"], artifact_dtype_for(DTYPE_NAMES[dtype], device.type)
            )
            for dtype in args.dtypes
        }
        pipeline = pipeline.to(device)
        modes = build_modes(pipeline, artifacts, device, baseline, args)
        for text in args.sizes:
            size = common.parse_size(text)
            large = size is not None and size[0] * size[1] > LARGE_PIXELS
            images, gts = common.prepare_images(scenes[: args.large_images if large else args.images], size)
            height, width = images[0].shape[:2]
            label = f"{text} {width}x{height}" if size is None else f"{width}x{height}"
            print(f"{label}: {len(images)} images, {args.rounds} rounds + warm-up", file=sys.stderr, flush=True)
            macs = {"per_image": pipeline_gmac(pipeline, (height, width))}
            rows += summarize_size(label, images, gts, run_rounds(modes, images, args.rounds, device), macs, peaks)
    print(common.format_table(rows, COLUMNS, title=f"model path: {source['variant']} on {device_name(machine)}"))
    targets = _targets(rows, device)
    common.print_targets(targets)
    config = {
        **source,
        "dtypes": args.dtypes,
        "scenes": args.scenes,
        "sizes": args.sizes,
        "images_per_size": args.images,
        "images_per_large_size": args.large_images,
        "rounds": args.rounds,
        "batch_size": args.batch_size or Settings().batch_size_on(device.type),
        "batched_size": args.batched_size,
        "tile_size": args.tile_size,
        "tile_overlap": args.tile_overlap,
        "bucket_multiple": args.bucket_multiple,
        "peak_tflops": peaks,
        "peak_source": "--peak-tflops (spec sheet)" if args.peak_tflops else "dense matmul measured here",
        "baseline": BASELINE,
    }
    results = {"rows": rows}
    common.write_report(args.out, "model", machine, config, results, targets, _notes(source))
    print(f"wrote {args.out}")
    return results


def timed_dtypes(requested: list[str] | None, device: torch.device) -> list[str]:
    """The precisions to time: as requested (fp16 refused on the CPU), or fp32 plus the device's ``auto`` one."""
    if requested is None:
        auto = SHORT_NAMES[resolve_dtype("auto", device.type)]
        return ["fp32"] if auto == "fp32" else ["fp32", auto]
    if device.type != "cuda" and "fp16" in requested:
        raise SystemExit("bench_model: fp16 is not offered on the CPU (model.precision); time fp32 and bf16")
    return list(dict.fromkeys(requested))


def device_name(machine: dict[str, Any]) -> str:
    """The GPU's name, or the CPU model and torch threads, for a table title."""
    if machine["cuda_device_name"]:
        return str(machine["cuda_device_name"])
    return f"{machine['cpu_model']}, {machine['torch_threads']} torch threads"


def _targets(rows: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """Traced + batched at least 1.3× (CPU) or 3× (GPU) the eager one-at-a-time images/s, per size and dtype; on
    the CPU also the default precision (``auto``, when it is not fp32) at least 1.5× fp32, per size.

    "Batched" is the service's batching on the device: batch 1 on the CPU (where bigger batches measured no faster,
    so the service does not batch there: ``Settings.batch_size_on``), ``traced_batched`` on CUDA.

    ``service_path`` is not a target row: it adds the tiling's extra pixels, whose cost bench_tiling measures.
    """
    limit = 3.0 if device.type == "cuda" else 1.3
    mode = "traced_b1" if Settings().batch_size_on(device.type) == 1 else "traced_batched"  # the service's batching
    targets = [
        common.target(f"{row['size']} {row['mode']} / {BASELINE}", row["ratio_vs_eager"], ">=", limit)
        for row in rows
        if row["mode"].split("[")[0] == mode
    ]
    if device.type == "cpu":  # the default CPU precision against fp32, where it is not fp32 itself
        default = SHORT_NAMES[resolve_dtype("auto", "cpu")]
        targets += [
            common.target(f"{row['size']} {row['mode']} / {mode}", row["ratio_vs_fp32"], ">=", CPU_SPEEDUP_TARGET)
            for row in rows
            if row["mode"] == f"{mode}[{default}]"
        ]
    return targets


def _notes(source: dict[str, str]) -> list[str]:
    notes = ["ratios are medians of per-round ratios; each round runs every mode in turn on the same images"]
    if source["weights"] == "random-init":
        notes.append("random-initialised weights: timings are valid, PSNR against GT is meaningless")
    return notes


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
