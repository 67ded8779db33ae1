"""The ``Server-Timing`` header of an image answer: where the request's time went, stage by stage, in milliseconds.

W3C Server Timing syntax (``compute;dur=583.2, encode;dur=34.5``): browsers' developer tools show it beside the
network timings, ``curl -i`` prints it, and ``bench_peers`` reads ``compute`` from it to tell a server's model
time from the time its serving adds. The stages are the worker's (``queue_wait``, ``decode``, ``compute``,
``encode``, as in a JSON answer's ``timings``) and ``total``, from the route's start to the answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["HEADER", "parse_server_timing", "server_timing"]

HEADER = "Server-Timing"


def server_timing(timings_ms: Mapping[str, float], started: float | None = None) -> dict[str, str]:
    """The header for a job's ``timings_ms``, plus ``total`` since ``started`` (a ``time.perf_counter()`` value)."""
    stages = dict(timings_ms)
    if started is not None:
        stages["total"] = 1000.0 * (time.perf_counter() - started)
    return {HEADER: ", ".join(f"{name};dur={ms:.1f}" for name, ms in stages.items())}


def parse_server_timing(value: str) -> dict[str, float]:
    """``{name: milliseconds}`` of a ``Server-Timing`` value; entries without a duration are left out."""
    stages = {}
    for entry in value.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        durations = [param.removeprefix("dur=") for param in params if param.startswith("dur=")]
        if name and durations:
            stages[name] = float(durations[0])
    return stages
