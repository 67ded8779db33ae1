"""Tiling and bucketing: the service's output against whole-image inference on SOTS scenes, and the overlap's cost.

    python -m tests.benchmarks.bench_tiling --out runs/benchmarks/tiling.json

The reference is whole-image inference: the TorchScript artifact on the full image, batch 1 (the network pads and
crops internally, as in the authors' evaluation). Each configuration ``TILE:OVERLAP`` runs the worker's own path
(``service.worker.runner.infer_image``: ``ImagePlan`` pieces, i.e. an image up to ``TILE`` on each side mirrored up
to the bucket multiple, a larger one cut into overlapping ``TILE`` tiles blended linearly; forwards of up to
``--batch-size`` pieces) on the same images, timed image by image in turn with the reference.

Reported per configuration: pieces per image, computed pixels / image pixels (the overlap's and the padding's
extra work), seconds per image and its ratio to whole-image inference, PSNR against the whole-image output
(agreement, dehazed image and depth map), and the change of PSNR against the GT
(``psnr_gt(config) - psnr_gt(whole)``, averaged over images). Target: the service's configuration (the first one,
by default the service settings) within 0.1 dB of whole-image inference.
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

import numpy as np

from service.config import Settings
from service.worker.plan import ImagePlan
from service.worker.runner import Runner, infer_image
from service.worker.tiling import plan_tiles
from tests.benchmarks import common
from training.metrics import mean_finite_psnr, psnr

WHOLE = "whole"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the first configuration defaults to the service's settings."""
    defaults = Settings()
    service = f"{defaults.tile_size}:{defaults.tile_overlap}"
    parser = argparse.ArgumentParser(prog="bench_tiling", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "tiling")
    parser.add_argument("--images", type=int, default=4, help="SOTS scenes (default 4)")
    parser.add_argument("--size", default="sots", help="sots (620x460), 1080p or HxW (scenes resized)")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(dict.fromkeys([service, "512:64", "640:64", "256:32", "256:64"])),
        help=f"TILE:OVERLAP pairs; the first is the one checked against the target (default {service} first)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="tiles a forward (default: the service's)")
    parser.add_argument("--bucket-multiple", type=int, default=defaults.bucket_multiple)
    args = parser.parse_args(argv)
    try:
        args.pairs = [tuple(int(v) for v in c.split(":")) for c in args.configs]
    except ValueError:
        parser.error("--configs takes TILE:OVERLAP pairs, e.g. 512:64")
    return args


def computed_pixels(height: int, width: int, tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    """Pieces of an image and the pixels the network computes for them (padded piece area × pieces)."""
    pieces = ImagePlan(np.zeros((height, width, 3), np.float32), tile, overlap, multiple).pieces
    return len(pieces), sum(p.shape[0] * p.shape[1] for p in pieces)


def run(runner: Runner, images: list[np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """Outputs and per-image seconds of whole-image inference and of every configuration, image by image."""
    names = [WHOLE, *args.configs]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}

    def one(name: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if name == WHOLE:
            dehazed, depth = runner.forward(image[None])
            return dehazed[0], depth[0, :, :, 0]
        tile, overlap = args.pairs[args.configs.index(name)]
        batch = args.batch_size or Settings().batch_size_on(runner.device.type)
        return infer_image(runner, image, tile, overlap, args.bucket_multiple, batch)

    for name in names:  # warm-up: the TorchScript executor specialises on each new shape
        one(name, images[0])
        one(name, images[0])
    for index, image in enumerate(images):
        for name in names:
            result, elapsed = common.timed(lambda name=name, image=image: one(name, image), runner.device)
            seconds[name].append(elapsed)
            outputs[name].append(result)
        print(f"  image {index}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in names), file=sys.stderr)
    return {"seconds": seconds, "outputs": outputs}


def rows_of(measured: dict[str, Any], gts: list[np.ndarray], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per configuration (whole-image inference first)."""
    seconds, outputs = measured["seconds"], measured["outputs"]
    whole = outputs[WHOLE]
    height, width = whole[0][0].shape[:2]
    whole_gt = [psnr(d, g) for (d, _), g in zip(whole, gts, strict=True)]
    whole_s = statistics.median(seconds[WHOLE])
    rows = []
    for name, outs in outputs.items():
        if name == WHOLE:
            pieces, pixels = 1, height * width
        else:
            pieces, pixels = computed_pixels(height, width, *args.pairs[args.configs.index(name)], args.bucket_multiple)
        gt_psnr = [psnr(d, g) for (d, _), g in zip(outs, gts, strict=True)]
        per_image_s = statistics.median(seconds[name])
        rows.append(
            {
                "config": name,
                "pieces": pieces,
                "pixel_ratio": pixels / (height * width),
                "s_per_image": per_image_s,
                "time_ratio": per_image_s / whole_s,
                "psnr_vs_whole_db": mean_finite_psnr(psnr(d, w) for (d, _), (w, _) in zip(outs, whole, strict=True)),
                "depth_psnr_vs_whole_db": mean_finite_psnr(
                    psnr(z, w) for (_, z), (_, w) in zip(outs, whole, strict=True)
                ),
                "psnr_vs_gt_db": float(np.mean(gt_psnr)),
                "delta_psnr_gt_db": float(np.mean(np.subtract(gt_psnr, whole_gt))),
            }
        )
    return rows


COLUMNS = [
    common.Column("config", "tile:overlap"),
    common.Column("pieces", "pieces"),
    common.Column("pixel_ratio", "px ratio", ".2f"),
    common.Column("s_per_image", "s/img", ".3f"),
    common.Column("time_ratio", "× whole time", ".2f"),
    common.Column("psnr_vs_whole_db", "PSNR vs whole", ".2f"),
    common.Column("depth_psnr_vs_whole_db", "depth PSNR vs whole", ".2f"),
    common.Column("psnr_vs_gt_db", "PSNR GT", ".3f"),
    common.Column("delta_psnr_gt_db", "Δ PSNR GT", "+.3f"),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    machine = common.machine_info(device, args.threads)
    pipeline, source = common.load_pipeline(args.weights)
    images, gts = common.prepare_images(common.load_sots(args.data, args.images), common.parse_size(args.size))
    with tempfile.TemporaryDirectory(prefix="bench_tiling_") as tmp:
        artifact = common.export_traced(pipeline, Path(tmp), source["variant"])
        runner = Runner.from_artifact(artifact, device=str(device))
        rows = rows_of(run(runner, images, args), gts, args)
    height, width = images[0].shape[:2]
    print(common.format_table(rows, COLUMNS, title=f"tiling on {len(images)} SOTS scenes at {width}x{height}:"))
    service = rows[1]
    targets = [
        common.target(f"|Δ PSNR GT| of {service['config']} vs whole (dB)", abs(service["delta_psnr_gt_db"]), "<=", 0.1)
    ]
    common.print_targets(targets)
    config = {
        **source,
        "images": len(images),
        "size": f"{width}x{height}",
        "configs": args.configs,
        "tiles_per_config": {
            c: len(plan_tiles(height, width, *p)) for c, p in zip(args.configs, args.pairs, strict=True)
        },
        "batch_size": args.batch_size or Settings().batch_size_on(device.type),
        "bucket_multiple": args.bucket_multiple,
        "reference": "whole image, TorchScript artifact, batch 1",
    }
    notes = ["random-initialised weights: PSNR against GT is meaningless"] if source["weights"] == "random-init" else []
    common.write_report(args.out, "tiling", machine, config, {"rows": rows}, targets, notes)
    print(f"wrote {args.out}")
    return {"rows": rows}


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
