"""``dehaze export``: trace the inference pipeline of a weights file (or an untrained variant) to an artifact.

Exit status 2 for a usage error (``--random-init`` without a known ``--variant``), 1 when the weights cannot be
read or hold another variant than ``--variant``, or when ``--check`` finds the traced outputs off the eager ones.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from commands._common import CommandError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["HELP", "add_arguments", "run"]

HELP = "trace the inference pipeline to a TorchScript artifact"

logger = logging.getLogger(__name__)

_CHECK_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.1}
"""Largest accepted |traced - eager float32| per artifact precision. bfloat16 keeps 8 significant bits: the small
model's bfloat16 artifact measured 0.05-0.06 on random inputs; its quality is gated by ``dehaze evaluate --dtype``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dehaze export``."""
    from model.checkpoint import DEFAULT_WEIGHTS  # torch: only when this subcommand runs

    parser.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help="checkpoint: ours (DCMPNet or CORUN), the authors' DCMPNet .pth or their CORUN.pth",
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact file to write")
    parser.add_argument(
        "--variant",
        default=None,
        help="expected variant of the weights; with --random-init, the variant to export untrained",
    )
    parser.add_argument("--random-init", action="store_true", help="export an untrained --variant (for tests)")
    parser.add_argument("--example-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--check", action="store_true", help="compare traced and eager outputs after exporting")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="precision the artifact computes in: bfloat16 is the CPU's reduced precision (default: float32)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``dehaze export``; returns the exit status."""
    from model.export import check_export, export_pipeline, load_artifact

    try:
        pipeline, info = _untrained(args) if args.random_init else _trained(args)
    except CommandError as error:
        logger.error("%s", error)
        return error.status
    path = export_pipeline(pipeline, args.out, example_hw=tuple(args.example_size), info=info, dtype=args.dtype)
    if not args.check:
        return 0
    diff = check_export(pipeline, load_artifact(path), [(37, 53), (1, 1), (64, 64)], [1, 2])
    logger.info("max |traced (%s) - eager (float32)| = %.3g", args.dtype, diff)
    if diff > _CHECK_TOLERANCE[args.dtype]:
        logger.error("traced artifact differs from eager by %.3g", diff)
        return 1
    return 0


def _untrained(args: argparse.Namespace) -> tuple[nn.Module, dict[str, str]]:
    """The randomly initialised ``--variant`` and what its artifact records."""
    from model.families import build_inference_pipeline

    if not args.variant:
        raise CommandError("--random-init needs --variant")
    try:
        pipeline = build_inference_pipeline(args.variant)
    except ValueError as error:
        raise CommandError(str(error)) from error
    from model.licence import PROJECT_LICENCE

    return pipeline, {"variant": args.variant, "weights_sha256": "untrained", "licence": PROJECT_LICENCE}


def _trained(args: argparse.Namespace) -> tuple[nn.Module, dict[str, str]]:
    """The pipeline of ``--weights`` (of the ``--variant`` when given) and what its artifact records."""
    from model.checkpoint import load_pipeline_from_weights
    from model.export import weights_info

    try:
        info = weights_info(args.weights)
        if args.variant and info["variant"] != args.variant:
            raise CommandError(f"{args.weights} holds variant {info['variant']}, not {args.variant}", status=1)
        pipeline = load_pipeline_from_weights(args.weights)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error), status=1) from error
    return pipeline, info
