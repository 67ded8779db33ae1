"""The README stays true to the code: its settings table, its ``dehaze`` subcommands and its curl endpoints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service.cli import SUBCOMMANDS
from service.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
# `dehaze <word>` not preceded or followed by a character that makes "dehaze" part of another name
# (dehaze_requests_total, dehaze:gpu, /dehaze, dehaze-service).
_SUBCOMMAND = re.compile(r"(?<![\w./:-])dehaze[ \t]+([a-z][\w-]*)")
_URL_PATH = re.compile(r"https?://[^/\s'\"]+(/[^\s?'\"#]*)")
_SETTING_ROW = re.compile(r"^\|\s*`DEHAZE_([A-Z0-9_]+)`\s*\|([^|]*)\|", re.M)


@pytest.fixture(scope="module")
def readme() -> str:
    """The README's text."""
    return README.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The body of the level-2 section ``## heading`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(heading)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def _code(text: str) -> list[str]:
    """Fenced blocks, 4-space indented lines outside them, and inline code spans."""
    blocks = _FENCE.findall(text)
    prose = _FENCE.sub("", text)
    indented = [line for line in prose.splitlines() if line.startswith("    ") and line.strip()]
    return [*blocks, *indented, *_INLINE.findall(prose)]


def _settings_rows(readme: str) -> list[tuple[str, str]]:
    """(FIELD, default cell) of every row of the Configuration section's table."""
    rows = _SETTING_ROW.findall(_section(readme, "Configuration"))
    return [(name.lower(), default.strip()) for name, default in rows]


def test_settings_table_lists_exactly_the_settings(readme: str) -> None:
    names = [name for name, _ in _settings_rows(readme)]
    assert len(names) == len(set(names)), f"settings listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert set(names) == set(Settings.model_fields), (
        f"missing from the README: {sorted(set(Settings.model_fields) - set(names))}; "
        f"not settings: {sorted(set(names) - set(Settings.model_fields))}"
    )


def _documents(cell: str, default: Any) -> bool:
    """Whether a table cell shows ``default`` (numbers by value, strings verbatim, None as 'unset')."""
    if default is None:
        return "unset" in cell
    if isinstance(default, str):
        return f"`{default}`" in cell if default else "empty" in cell
    number = re.search(r"-?\d[\d_,]*(?:\.\d+)?", cell)
    return number is not None and float(number.group().replace("_", "").replace(",", "")) == float(default)


def test_settings_table_shows_the_defaults(readme: str) -> None:
    wrong = [
        f"DEHAZE_{name.upper()}: README {cell!r}, code {Settings.model_fields[name].default!r}"
        for name, cell in _settings_rows(readme)
        if name in Settings.model_fields and not _documents(cell, Settings.model_fields[name].default)
    ]
    assert not wrong, "; ".join(wrong)


def test_every_subcommand_named_exists_and_every_subcommand_is_documented(readme: str) -> None:
    named = {match for code in _code(readme) for match in _SUBCOMMAND.findall(code)}
    assert named, "the README names no `dehaze <subcommand>`"
    assert named <= set(SUBCOMMANDS), f"not subcommands of dehaze: {sorted(named - set(SUBCOMMANDS))}"
    assert set(SUBCOMMANDS) <= named, f"subcommands the README does not show: {sorted(set(SUBCOMMANDS) - named)}"


@pytest.fixture(scope="module")
def app_paths() -> tuple[set[str], set[str]]:
    """The API's endpoints (from its OpenAPI schema) and every path the app serves (endpoints, /docs, ...).

    Only ``create_app`` runs, not its lifespan, so no model, queue or FADE pool is needed.
    """
    from service.main import create_app

    app = create_app(Settings())
    endpoints = set(app.openapi()["paths"])
    served = endpoints | {path for route in app.routes if isinstance(path := getattr(route, "path", None), str)}
    return endpoints, served


def test_curl_examples_name_real_endpoints_and_cover_the_api(readme: str, app_paths: tuple[set[str], set[str]]) -> None:
    endpoints, served = app_paths
    curl_lines = [line for code in _code(readme) for line in code.splitlines() if line.lstrip().startswith("curl ")]
    shown = {path for line in curl_lines for path in _URL_PATH.findall(line)}
    assert shown, "the README has no curl example"
    assert shown <= served, f"curl examples call paths the app does not serve: {sorted(shown - served)}"
    assert endpoints <= shown, f"endpoints without a curl example: {sorted(endpoints - shown)}"


_STATUS_ROW = re.compile(r"^\|\s*(\d{3})\s*\|(.*)\|\s*$", re.M)
_COMMAND_ROW = re.compile(r"^\|\s*`dehaze ([a-z][\w-]*)`\s*\|(.*)\|\s*$", re.M)
_METRIC_ROW = re.compile(r"^\|\s*`(dehaze_[a-z_]+)`\s*\|([^|]*)\|([^|]*)\|", re.M)


def _errors_rows(readme: str) -> dict[int, str]:
    """Status -> the text of all its rows in the API's Errors table (a status may have a row per cause)."""
    section = _section(readme, "API")
    table = section[section.index("### Errors") :]
    table = table[: table.index("\n### ")]
    rows: dict[int, str] = {}
    for status, text in _STATUS_ROW.findall(table):
        rows[int(status)] = rows.get(int(status), "") + text
    return rows


def test_errors_table_names_every_cause_of_every_status(readme: str) -> None:
    """Every cause in ``ERROR_CAUSES`` (the OpenAPI descriptions' source) is in its status's README row(s)."""
    from service.api.openapi import ERROR_CAUSES
    from service.errors import ImageError

    rows = _errors_rows(readme)
    statuses = {cause.status for cause in ERROR_CAUSES}
    assert set(rows) == statuses, f"README statuses {sorted(rows)}, the code's {sorted(statuses)}"
    assert all(cause.term in cause.text for cause in ERROR_CAUSES), "each cause's description names its term"
    missing = [f"{cause.status}: {cause.term!r}" for cause in ERROR_CAUSES if cause.term not in rows[cause.status]]
    assert not missing, f"causes the README's Errors table does not name: {missing}"
    image_statuses = {ImageError.status} | {kind.status for kind in _subclasses(ImageError)}
    assert image_statuses <= statuses, f"upload errors whose status is undocumented: {image_statuses - statuses}"


def _subclasses(kind: type) -> set[type]:
    return {sub for direct in kind.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def test_command_table_lists_every_flag_of_every_subcommand(readme: str) -> None:
    """Each subcommand's row names exactly its parser's long options (``--help`` aside)."""
    import argparse

    from service.cli import build_parser

    rows = dict(_COMMAND_ROW.findall(_section(readme, "Command line")))
    wrong = []
    for name in SUBCOMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        flags = {flag for action in sub._actions for flag in action.option_strings if flag.startswith("--")}
        flags.discard("--help")
        # flags are the code spans that start with "--" (`--baseline dcp\|lkd\|none`), not `evaluate --save-images`
        shown = {span.split()[0] for span in _INLINE.findall(rows.get(name, "")) if span.startswith("--")}
        if flags != shown:
            wrong.append(f"dehaze {name}: missing {sorted(flags - shown)}, not flags {sorted(shown - flags)}")
    assert not wrong, "; ".join(wrong)


def test_observability_table_lists_every_metric_and_job_outcome(readme: str) -> None:
    """The service's Prometheus metrics (by exported name) and every ``outcome`` of ``dehaze_jobs_total``."""
    from prometheus_client import REGISTRY

    from service.metrics import JOB_OUTCOMES

    rows = {name: labels for name, _kind, labels in _METRIC_ROW.findall(_section(readme, "Observability"))}
    exported = {  # a counter family's samples are named <name>_total
        f"{metric.name}_total" if metric.type == "counter" else metric.name
        for metric in REGISTRY.collect()
        if metric.name.startswith("dehaze_")
    }
    assert exported, "no dehaze_ metric is registered"
    assert exported <= set(rows), f"metrics missing from the README: {sorted(exported - set(rows))}"
    outcomes = set(re.findall(r"`(\w+)`", rows["dehaze_jobs_total"].split("=", 1)[-1]))
    assert set(JOB_OUTCOMES) <= outcomes, f"job outcomes missing: {sorted(set(JOB_OUTCOMES) - outcomes)}"
