"""The `dehaze` command line: one entry point, one subcommand per task.

Each subcommand lives in the module that owns the work and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``dehaze --help`` stays fast and a broken optional import cannot take
down unrelated commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from model.allocator import tune_for_inference

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

# name -> (module path, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("model.summary", "parameters, MACs and CPU latency of every model variant"),
    "export": ("model.export", "trace the inference pipeline to a TorchScript artifact"),
    "serve": ("service.commands.serve", "API and worker in one process (embedded default, no Redis needed)"),
    "api": ("service.commands.api", "the HTTP API alone, on a Redis queue"),
    "worker": ("service.commands.worker", "a batching inference worker on a Redis queue"),
    "run": ("service.commands.run", "dehaze files and folders offline"),
    "train": ("training.train", "train DCMPNet (dual-task) or pre-train CORUN, as the config's variant says"),
    "finetune": ("training.colabator.finetune", "fine-tune a DCMPNet or CORUN checkpoint on real photos (Colabator)"),
    "evaluate": ("training.evaluate", "PSNR/SSIM/FADE/depth metrics of a model or of the DCP baseline"),
    "release": ("training.release", "strip a training checkpoint down to shippable weights with provenance"),
    "compare": ("training.compare", "side-by-side pictures of several evaluated methods on the same photos"),
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog="dehaze", description="Single-image dehazing (DCMPNet or CORUN).")
    parser.add_argument("--log-level", default=None, help="logging level (default: DEHAZE_LOG_LEVEL, else INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in (argv or []) if a in SUBCOMMANDS), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(sub)
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
    return int(_load(args.command).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
