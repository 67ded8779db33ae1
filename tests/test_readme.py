"""The README and docs/ stay true to the code and to each other.

The README is the front door: what the project is, the two set-up commands, the first request and a list of the
pages under docs/. The pages hold the reference: the settings table (configuration.md), the ``dehaze`` subcommands
and their flags (cli.md), the endpoints, errors and headers (api.md), the metrics (observability.md). These tests
check those tables and examples against the code, that every page is linked from the README, and that every
relative link in the README and the pages names a file (and a heading) that exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from commands.cli import SUBCOMMANDS
from service.config import Settings

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
CI_SCRIPT = REPO / ".ci" / "run"
README_MAX_LINES = 200
"""The README is the short front door (issue 16): the reference lives in docs/."""

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
# `dehaze <word>` not preceded or followed by a character that makes "dehaze" part of another name
# (dehaze_requests_total, dehaze:gpu, /dehaze, dehaze-service).
_SUBCOMMAND = re.compile(r"(?<![\w./:-])dehaze[ \t]+([a-z][\w-]*)")
_URL_PATH = re.compile(r"https?://[^/\s'\"]+(/[^\s?'\"#]*)")
_SETTING_ROW = re.compile(r"^\|\s*`DEHAZE_([A-Z0-9_]+)`\s*\|([^|]*)\|", re.M)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")


@pytest.fixture(scope="module")
def readme() -> str:
    """The README's text."""
    return README.read_text(encoding="utf-8")


def _page(name: str) -> str:
    """The text of ``docs/<name>``."""
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text(encoding="utf-8")


def _pages() -> dict[str, str]:
    """Every Markdown page under docs/ (relative path -> text)."""
    return {path.relative_to(DOCS).as_posix(): path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))}


@pytest.fixture(scope="module")
def documentation(readme: str) -> str:
    """The README and every page of docs/, one after the other: where commands and curl examples may appear."""
    return "\n\n".join([readme, *_pages().values()])


def _section(text: str, heading: str, level: int = 2) -> str:
    """The body of the section ``## heading`` (``level`` hashes), up to the next heading of that level or above.

    Lines inside fenced code blocks are never headings (a shell comment is not a section).
    """
    body: list[str] | None = None
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            depth, title = len(match.group(1)), match.group(2)
            if body is not None and depth <= level:
                break
            if body is None and depth == level and title == heading:
                body = []
                continue
        if body is not None:
            body.append(line)
    assert body is not None, f"no '{'#' * level} {heading}' section"
    return "".join(body)


def _code(text: str) -> list[str]:
    """Fenced blocks, 4-space indented lines outside them, and inline code spans."""
    blocks = _FENCE.findall(text)
    prose = _FENCE.sub("", text)
    indented = [line for line in prose.splitlines() if line.startswith("    ") and line.strip()]
    return [*blocks, *indented, *_INLINE.findall(prose)]


def _settings_rows() -> list[tuple[str, str]]:
    """(FIELD, default cell) of every row of the settings table in docs/configuration.md."""
    rows = _SETTING_ROW.findall(_page("configuration.md"))
    return [(name.lower(), default.strip()) for name, default in rows]


def test_settings_table_lists_exactly_the_settings() -> None:
    names = [name for name, _ in _settings_rows()]
    assert len(names) == len(set(names)), f"settings listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert set(names) == set(Settings.model_fields), (
        f"missing from docs/configuration.md: {sorted(set(Settings.model_fields) - set(names))}; "
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


def test_settings_table_shows_the_defaults() -> None:
    wrong = [
        f"DEHAZE_{name.upper()}: docs/configuration.md {cell!r}, code {Settings.model_fields[name].default!r}"
        for name, cell in _settings_rows()
        if name in Settings.model_fields and not _documents(cell, Settings.model_fields[name].default)
    ]
    assert not wrong, "; ".join(wrong)


def test_every_subcommand_named_exists_and_every_subcommand_is_documented(documentation: str) -> None:
    named = {match for code in _code(documentation) for match in _SUBCOMMAND.findall(code)}
    assert named, "the README and docs/ name no `dehaze <subcommand>`"
    assert named <= set(SUBCOMMANDS), f"not subcommands of dehaze: {sorted(named - set(SUBCOMMANDS))}"
    assert set(SUBCOMMANDS) <= named, (
        f"subcommands the README and docs/ do not show: {sorted(set(SUBCOMMANDS) - named)}"
    )


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


def _curl_lines(text: str) -> list[str]:
    return [line for code in _code(text) for line in code.splitlines() if line.lstrip().startswith("curl ")]


def test_curl_examples_name_real_endpoints_and_cover_the_api(
    documentation: str, readme: str, app_paths: tuple[set[str], set[str]]
) -> None:
    endpoints, served = app_paths
    assert _curl_lines(readme), "the README shows no first curl"
    shown = {path for line in _curl_lines(documentation) for path in _URL_PATH.findall(line)}
    assert shown, "the README and docs/ have no curl example"
    assert shown <= served, f"curl examples call paths the app does not serve: {sorted(shown - served)}"
    assert endpoints <= shown, f"endpoints without a curl example: {sorted(endpoints - shown)}"


_STATUS_ROW = re.compile(r"^\|\s*(\d{3})\s*\|(.*)\|\s*$", re.M)
_COMMAND_ROW = re.compile(r"^\|\s*`dehaze ([a-z][\w-]*)`\s*\|(.*)\|\s*$", re.M)
_METRIC_ROW = re.compile(r"^\|\s*`(dehaze_[a-z_]+)`\s*\|([^|]*)\|([^|]*)\|", re.M)


def _errors_rows() -> dict[int, str]:
    """Status -> the text of all its rows in the Errors table of docs/api.md (a status may have a row per cause)."""
    table = _section(_page("api.md"), "Errors")
    rows: dict[int, str] = {}
    for status, text in _STATUS_ROW.findall(table):
        rows[int(status)] = rows.get(int(status), "") + text
    return rows


def test_errors_table_names_every_cause_of_every_status() -> None:
    """Every cause in ``ERROR_CAUSES`` (the OpenAPI descriptions' source) is in its status's row(s) in docs/api.md."""
    from service.api.openapi import ERROR_CAUSES
    from service.errors import ImageError

    rows = _errors_rows()
    statuses = {cause.status for cause in ERROR_CAUSES}
    assert set(rows) == statuses, f"docs/api.md statuses {sorted(rows)}, the code's {sorted(statuses)}"
    assert all(cause.term in cause.text for cause in ERROR_CAUSES), "each cause's description names its term"
    missing = [f"{cause.status}: {cause.term!r}" for cause in ERROR_CAUSES if cause.term not in rows[cause.status]]
    assert not missing, f"causes the Errors table of docs/api.md does not name: {missing}"
    image_statuses = {ImageError.status} | {kind.status for kind in _subclasses(ImageError)}
    assert image_statuses <= statuses, f"upload errors whose status is undocumented: {image_statuses - statuses}"


def _subclasses(kind: type) -> set[type]:
    return {sub for direct in kind.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def test_command_table_lists_every_flag_of_every_subcommand() -> None:
    """Each subcommand's row in docs/cli.md names exactly its parser's long options (``--help`` aside)."""
    import argparse

    from commands.cli import build_parser

    rows = dict(_COMMAND_ROW.findall(_page("cli.md")))
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


def test_observability_table_lists_every_metric_and_job_outcome() -> None:
    """docs/observability.md: the Prometheus metrics (exported names) and every ``outcome`` of ``dehaze_jobs_total``."""
    from prometheus_client import REGISTRY

    from service.metrics import JOB_OUTCOMES

    rows = {name: labels for name, _kind, labels in _METRIC_ROW.findall(_page("observability.md"))}
    exported = {  # a counter family's samples are named <name>_total
        f"{metric.name}_total" if metric.type == "counter" else metric.name
        for metric in REGISTRY.collect()
        if metric.name.startswith("dehaze_")
    }
    assert exported, "no dehaze_ metric is registered"
    assert exported <= set(rows), f"metrics missing from docs/observability.md: {sorted(exported - set(rows))}"
    outcomes = set(re.findall(r"`(\w+)`", rows["dehaze_jobs_total"].split("=", 1)[-1]))
    assert set(JOB_OUTCOMES) <= outcomes, f"job outcomes missing: {sorted(set(JOB_OUTCOMES) - outcomes)}"


SERVE_COMMAND = "pip install torch==2.13.0 -e . && dehaze serve"
"""The first set-up command: the service on its embedded default (no Redis, CPU without a GPU, shipped weights)."""


def _ci_test_command() -> str:
    """The command that .ci/run runs as "the README's test command" (the line after that comment)."""
    lines = CI_SCRIPT.read_text(encoding="utf-8").splitlines()
    marker = next(i for i, line in enumerate(lines) if line.strip() == "# The README's test command:")
    return next(line.strip() for line in lines[marker + 1 :] if line.strip())


def test_readme_is_the_short_front_door(readme: str) -> None:
    """At most README_MAX_LINES lines, one picture, and the two set-up commands verbatim (the second as CI runs it)."""
    assert len(readme.splitlines()) <= README_MAX_LINES, f"README has {len(readme.splitlines())} lines"
    pictures = re.findall(r"!\[[^\]]*\]\(|<img\s", readme)
    assert len(pictures) == 1, f"the README shows {len(pictures)} pictures, not one"
    commands = {line.strip() for code in _code(readme) for line in code.splitlines()}
    test_command = _ci_test_command()
    assert test_command == 'pip install torch==2.13.0 -e ".[test]" && python -m pytest', test_command
    missing = [command for command in (SERVE_COMMAND, test_command) if command not in commands]
    assert not missing, f"set-up commands missing from the README: {missing}"


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMG_SRC = re.compile(r"<img\s[^>]*\bsrc=\"([^\"]+)\"")
_REFERENCE = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t].*)?$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _links(text: str) -> list[str]:
    """Every link target of a Markdown text outside code: inline links and images, <img src>, reference definitions."""
    prose = _FENCE.sub("", text)
    prose = _INLINE.sub("code", prose)
    return [*_LINK.findall(prose), *_IMG_SRC.findall(prose), *_REFERENCE.findall(prose)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    """The anchors of a Markdown text's headings (outside code blocks), repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    anchors = set()
    for title in re.findall(r"^#{1,6}[ \t]+(.*?)[ \t#]*$", _FENCE.sub("", text), re.M):
        slug = _slug(title)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_docs_page_is_linked_from_the_readme(readme: str) -> None:
    linked = {(REPO / unquote(target.split("#", 1)[0])).resolve() for target in _links(readme)}
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    unlinked = [page.relative_to(REPO).as_posix() for page in pages if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_relative_links_resolve() -> None:
    """Every relative link in the README and docs/*.md names an existing file, and an existing heading after a '#'."""
    broken = []
    for source in _markdown_files():
        text = source.read_text(encoding="utf-8")
        for target in _links(text):
            if _SCHEME.match(target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (source.parent / unquote(path)).resolve() if path else source
            where = f"{source.relative_to(REPO).as_posix()} -> {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{where}: no such heading")
    assert not broken, "broken links: " + "; ".join(broken)
