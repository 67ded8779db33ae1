"""The PromQL expressions of a Grafana dashboard and the metric names they use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["GRAFANA_VARIABLES", "dashboard_expressions", "metric_names", "to_promql"]

# Grafana's built-in interval variables, replaced by what a test Prometheus can evaluate.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Every ``(panel title, expr)`` of the dashboard, rows and nested panels included."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def to_promql(expr: str) -> str:
    """Replace Grafana's variables by fixed values.

    Raises:
        ValueError: if a ``$`` variable remains that is not one of :data:`GRAFANA_VARIABLES`.
    """
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    if "$" in _STRINGS.sub("", expr):
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def metric_names(expr: str, prefix: str = "dehaze_") -> set[str]:
    """The metric names (with ``prefix``) an expression selects; label values inside quotes are ignored."""
    return {name for name in _IDENTIFIER.findall(_STRINGS.sub('""', expr)) if name.startswith(prefix)}
