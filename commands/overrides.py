"""``--set KEY=VALUE`` of ``dehaze train`` and ``dehaze finetune``: dotted keys, YAML values, merged over a config."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

__all__ = ["parse_overrides"]


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML).

    Raises:
        ValueError: A pair without ``=`` or with an empty key.
    """
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ValueError(f"--set expects KEY=VALUE with a dotted key, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return out
