"""Reading docker/compose.yaml the way Docker Compose does, for tests that have no Docker engine.

Covers what our compose files use: YAML anchors and merge keys, ``${NAME}`` / ``${NAME:-default}`` interpolation
(with an empty environment, so the defaults are what is checked), Compose's ``!reset`` / ``!override`` tags, and the
merge of an override file onto a base file (mappings merge key by key, ``!reset`` removes, ``!override`` replaces).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RESET", "interpolate", "load_compose", "merge"]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reset:
    """Marker left by ``!reset``: the key is removed when the file is merged onto another."""

    def __repr__(self) -> str:
        return "RESET"


RESET = _Reset()


class _Override:
    """Value tagged ``!override``: replaces the base value instead of merging into it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also understands Compose's merge tags."""


def _construct_reset(loader: yaml.SafeLoader, node: yaml.Node) -> _Reset:
    return RESET


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    return _Override(loader.construct_scalar(node))


_ComposeLoader.add_constructor("!reset", _construct_reset)
_ComposeLoader.add_constructor("!override", _construct_override)


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Substitute ``${NAME}`` and ``${NAME:-default}`` in every string of ``value``.

    Raises:
        ValueError: on a ``$`` form that this reader does not implement (so a test notices instead of guessing).
    """
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, _Override):
        return _Override(interpolate(value.value, env))
    if not isinstance(value, str):
        return value
    result = _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if "$" in result.replace("$$", ""):
        raise ValueError(f"unsupported interpolation in {value!r}")
    return result.replace("$$", "$")


def load_compose(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Parse one compose file, resolve anchors and merge keys, interpolate, drop the ``x-`` extension keys."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    return interpolate(data, env)


def merge(base: Any, override: Any) -> Any:
    """Merge ``override`` onto ``base`` as Compose merges ``-f base -f override``.

    Mappings merge recursively; ``!reset`` removes the key; ``!override`` and scalars replace; sequences of
    ports/volumes/commands in the override replace the base (enough for our files, which override no sequence
    that Compose would append to).
    """
    if isinstance(override, _Override):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is RESET:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = merge({}, value) if isinstance(value, dict) else value
        return merged
    return override
