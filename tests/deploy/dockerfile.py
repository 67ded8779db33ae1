"""A small Dockerfile reader (instructions with their arguments) and a ``.dockerignore`` matcher, for tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Instruction", "dockerignore_excludes", "parse_dockerfile", "read_dockerignore"]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword and its argument text (continuation lines joined)."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD.

        Raises:
            ValueError: if the instruction is in shell form.
        """
        text = self.args.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text.strip())
        if not isinstance(value, list):
            raise ValueError(f"{self.keyword} is not in exec form: {self.args!r}")
        return value


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions in order; comments, blank lines and line continuations handled as Docker does."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, ``/``-separated) out of the build context.

    A pattern matches a path or any of its parent folders; the last matching pattern wins; ``!`` re-includes.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern[1:] if negate else pattern)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def read_dockerignore(path: Path) -> list[str]:
    """The patterns of a ``.dockerignore`` file."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]
