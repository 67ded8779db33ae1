"""The ``dehaze`` command: the parser, one subcommand per module of this package, and ``main``.

Only the chosen subcommand's arguments are added to the parser: some need torch to list their choices (the model
variants of ``summary``) or defaults (the shipped weights of ``export``), and the other subcommands must not pay
for that.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Protocol

from commands import api, compare, evaluate, export, finetune, release, run, serve, summary, train, worker
from commands.allocator import tune_for_inference
from model.kernel_cache import size_kernel_cache

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]


class Subcommand(Protocol):
    """What ``main`` needs of a subcommand's module."""

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the subcommand's flags to its parser."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; the exit status."""


SUBCOMMANDS: dict[str, Subcommand] = {
    "summary": summary,
    "export": export,
    "serve": serve,
    "api": api,
    "worker": worker,
    "run": run,
    "train": train,
    "finetune": finetune,
    "evaluate": evaluate,
    "release": release,
    "compare": compare,
}
"""Every subcommand by name, in the order of ``dehaze --help``."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its arguments."""
    parser = argparse.ArgumentParser(prog="dehaze", description="Single-image dehazing (DCMPNet or CORUN).")
    parser.add_argument("--log-level", default=None, help="logging level (default: DEHAZE_LOG_LEVEL, else INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in (argv or []) if a in SUBCOMMANDS), None)
    for name, command in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=command.HELP, description=command.HELP)
        if name == chosen:
            command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), configure logging and run the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = (args.log_level or os.environ.get("DEHAZE_LOG_LEVEL") or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        parser.error(f"unknown log level {level!r} (from --log-level or DEHAZE_LOG_LEVEL)")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_for_inference()  # before the subcommand starts any thread
    size_kernel_cache()  # before the first forward pass creates a oneDNN kernel
    return int(SUBCOMMANDS[args.command].run(args) or 0)
