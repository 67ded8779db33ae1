"""``dehaze finetune``: Colabator fine-tuning of a checkpoint on real hazy photos (``training.colabator``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from commands.overrides import parse_overrides

__all__ = ["HELP", "add_arguments", "run"]

HELP = "fine-tune a DCMPNet or CORUN checkpoint on real photos (Colabator)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--real``, ``--resume`` and ``--set`` of ``dehaze finetune``."""
    parser.add_argument("--config", required=True, type=Path, help="fine-tuning YAML (training/configs/colabator_*)")
    parser.add_argument(
        "--real",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="folder of real hazy photos (repeatable; replaces the config's real.roots)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/last.pt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")


def run(args: argparse.Namespace) -> int:
    """Runs fine-tuning from parsed arguments; returns the exit code."""
    from training.colabator.config import load_finetune_config
    from training.colabator.finetune import Finetuner

    overrides = parse_overrides(args.set)
    if args.real:
        overrides.setdefault("real", {})["roots"] = [str(p) for p in args.real]
    Finetuner(load_finetune_config(args.config, overrides), resume=args.resume).train()
    return 0
