"""``dehaze train --config FILE [--resume] [--set KEY=VALUE]``: trains the network a config names.

A DCMPNet variant trains with :class:`training.trainer.Trainer` (the paper's dual-task training), a CORUN
variant with :mod:`training.corun_train` (its pre-training). This module is the command's arguments only.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from training.config import load_config

__all__ = ["add_arguments", "main", "parse_overrides", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config`` and ``--resume`` to the ``dehaze train`` parser."""
    parser.add_argument("--config", required=True, type=Path, help="training YAML (see training/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/last.pt")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, dotted keys, YAML values (e.g. --set formulation=joint --set data.crop=128)",
    )


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML).

    Raises:
        ValueError: A pair without ``=`` or with an empty key.
    """
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ValueError(f"--set expects KEY=VALUE with a dotted key, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    """Runs training from parsed arguments; returns the exit code. A CORUN variant goes to its own trainer."""
    from training.corun_config import is_corun_config

    overrides = parse_overrides(args.set)
    if is_corun_config(args.config, overrides):
        from training.corun_train import run_corun

        return run_corun(args.config, overrides, resume=args.resume)
    from training.trainer import Trainer

    cfg = load_config(args.config, overrides)
    Trainer(cfg, resume=args.resume).train()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m training.train --config FILE [--resume]``."""
    parser = argparse.ArgumentParser(prog="dehaze train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
