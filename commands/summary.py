"""``dehaze summary``: the cost of every model variant (``model.summary``) as a table or as JSON lines.

With ``--json`` each variant's line is written as soon as it is measured: the paper-size variants take seconds each.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "parameters, MACs and CPU latency of every model variant"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dehaze summary``."""
    from model.families import variant_names  # torch: only when this subcommand runs

    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--variants", nargs="+", choices=sorted(variant_names()), default=variant_names())
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")


def run(args: argparse.Namespace) -> int:
    """Runs ``dehaze summary``; returns the exit status."""
    from model.summary import format_table, summarize

    rows = []
    for name in args.variants:
        row = summarize(name, repeats=args.repeats, latency=not args.no_latency)
        rows.append(row)
        if args.json:
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
    if not args.json:
        sys.stdout.write(format_table(rows))
    return 0
