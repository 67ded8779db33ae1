"""Reading docker/compose.yaml the way Docker Compose does, for tests that have no Docker engine.

Covers what our compose files use: YAML anchors and merge keys, ``${NAME}`` / ``${NAME:-default}`` interpolation
(with an empty environment, so the defaults are what is checked), Compose's ``!reset`` / ``!override`` tags, the
merge of an override file onto a base file (mappings merge key by key, ``!reset`` removes, ``!override`` replaces),
and the top-level ``include`` of the root compose.yaml (each included file keeps its own folder as the base of its
relative paths, and a resource defined twice is an error, as in Compose).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RESET", "absolute_paths", "interpolate", "load_compose", "load_with_includes", "merge"]

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


_RESOURCES = ("services", "volumes", "networks", "configs", "secrets")


def absolute_paths(compose: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of ``compose`` whose relative build contexts and bind-mount sources are resolved against ``folder``."""
    services = {}
    for name, service in compose.get("services", {}).items():
        service = dict(service)
        build = service.get("build")
        if isinstance(build, str):
            service["build"] = str((folder / build).resolve())
        elif isinstance(build, dict) and "context" in build:
            service["build"] = {**build, "context": str((folder / build["context"]).resolve())}
        volumes = []
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and volume.startswith("."):
                source, rest = volume.split(":", 1)
                volume = f"{(folder / source).resolve()}:{rest}"
            volumes.append(volume)
        if "volumes" in service:
            service["volumes"] = volumes
        services[name] = service
    return {**compose, "services": services}


def _include_entries(include: Any) -> list[dict[str, Any]]:
    """The long form of every ``include`` item (a bare string is ``{path: string}``)."""
    if not isinstance(include, list):
        raise ValueError(f"include must be a list, got {type(include).__name__}")
    entries = []
    for item in include:
        entry = {"path": item} if isinstance(item, str) else dict(item)
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        entries.append({**entry, "path": paths})
    return entries


def load_with_includes(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``load_compose(path)`` with its ``include`` resolved: every path absolute, the included resources merged in.

    Raises:
        FileNotFoundError: an included file does not exist.
        ValueError: a resource is defined both by the file and by what it includes (Compose refuses that too).
    """
    compose = absolute_paths(load_compose(path, env), path.parent)
    for entry in _include_entries(compose.pop("include", [])):
        files = [(path.parent / name).resolve() for name in entry["path"]]
        missing = [str(file) for file in files if not file.is_file()]
        if missing:
            raise FileNotFoundError(f"{path} includes {missing}, which do not exist")
        included: dict[str, Any] = {}
        for file in files:  # several paths: merged like -f FILE -f FILE
            included = merge(included, load_compose(file, env))
        if "include" in included:
            raise ValueError(f"{files}: nested include is not implemented by this reader")
        folder = path.parent / entry["project_directory"] if "project_directory" in entry else files[0].parent
        included = absolute_paths(included, folder)
        for kind in _RESOURCES:
            clash = set(compose.get(kind) or {}) & set(included.get(kind) or {})
            if clash:
                raise ValueError(f"{path}: {kind} {sorted(clash)} are defined by the file and by its include")
            if included.get(kind):
                compose[kind] = {**(compose.get(kind) or {}), **included[kind]}
    return compose
