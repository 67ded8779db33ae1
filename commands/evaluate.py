"""``dehaze evaluate``: the metrics of a checkpoint or of a baseline on a folder (``training.evaluate``).

Exit status 1, with the reason logged, when the evaluation cannot run or fails part way (a bad flag combination,
a missing file, a device that is not there).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from service.config import PRECISIONS

__all__ = ["HELP", "add_arguments", "run"]

HELP = "PSNR/SSIM/FADE/depth metrics of a model or of the DCP baseline"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``dehaze evaluate`` options."""
    parser.add_argument("--data", required=True, type=Path, help="RESIDE-layout folder or a flat folder of photos")
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the packaged weights)")
    parser.add_argument(
        "--baseline",
        choices=["dcp", "lkd", "dehazeformer", "none"],
        default=None,
        help="evaluate the dark channel prior (dcp), the LKD-Net teacher (lkd), the DehazeFormer-T that dcmpnet_t "
        "starts from (dehazeformer) or the unprocessed input (none)",
    )
    parser.add_argument(
        "--dehazeformer",
        type=Path,
        default=None,
        help="with --baseline dehazeformer: a DehazeFormer-T .pth (default: ../shared/pretrained/dehazeformer-t-its/)",
    )
    parser.add_argument(
        "--teacher",
        default="lkd-s-its",
        help="with --baseline lkd: lkd-{s,t}-{its,ots} or a released LKD-Net .pth file (default: lkd-s-its)",
    )
    parser.add_argument(
        "--held-out-of",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="flat folders: evaluate only the photos this training config held out (distill.real.exclude_names)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for metrics.json and per_image.csv")
    parser.add_argument("--save-images", action="store_true", help="also write dehazed images and depth maps")
    parser.add_argument(
        "--scenes", nargs="+", default=None, help="RESIDE folders: evaluate only these scenes (e.g. a test split)"
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is <= N")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="float32",
        help="the network's precision; auto = what the service picks on this device (default: float32)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the evaluation; returns 0 on success, 1 on failure (the reason is logged)."""
    from training.evaluate import evaluate

    try:
        evaluate(
            data=args.data,
            out=args.out,
            weights=args.weights,
            baseline=args.baseline,
            teacher=args.teacher,
            **({"dehazeformer": args.dehazeformer} if getattr(args, "dehazeformer", None) is not None else {}),
            held_out_of=args.held_out_of,
            save_images=args.save_images,
            scenes=args.scenes,
            limit=args.limit,
            max_side=args.max_side,
            device=args.device,
            dtype=args.dtype,
        )
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        logger.error("evaluation failed: %s", err)
        return 1
    return 0
