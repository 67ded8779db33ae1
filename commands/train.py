"""``dehaze train --config FILE [--resume] [--set KEY=VALUE]``: trains the network a config names.

A DCMPNet variant trains with :class:`training.trainer.Trainer` (the paper's dual-task training), a CORUN
variant with :mod:`training.corun_train` (its pre-training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from commands.overrides import parse_overrides

__all__ = ["HELP", "add_arguments", "run"]

HELP = "train DCMPNet (dual-task) or pre-train CORUN, as the config's variant says"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config``, ``--resume`` and ``--set`` to the ``dehaze train`` parser."""
    parser.add_argument("--config", required=True, type=Path, help="training YAML (see training/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/last.pt")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, dotted keys, YAML values (e.g. --set formulation=joint --set data.crop=128)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs training from parsed arguments; returns the exit code. A CORUN variant goes to its own trainer."""
    from training.corun_config import is_corun_config

    overrides = parse_overrides(args.set)
    if is_corun_config(args.config, overrides):
        from training.corun_train import run_corun

        return run_corun(args.config, overrides, resume=args.resume)
    from training.config import load_config
    from training.trainer import Trainer

    cfg = load_config(args.config, overrides)
    Trainer(cfg, resume=args.resume).train()
    return 0
