"""The licence weights are under, as an SPDX id, from the weights file to the artifact and every answer.

A checkpoint of our format (DCMPNet's or CORUN's) may record ``metadata["licence"]``: weights derived from someone
else's weights keep that licence (e.g. ``GPL-3.0`` for a warm start from the DehazeFormer-T file,
``model.warm_start``). A checkpoint of ours that records none is under the project's own licence,
:data:`PROJECT_LICENCE`. The authors' released DCMPNet and CORUN files carry no licence we can read (their terms are
their repositories'), so they are :data:`UNKNOWN_LICENCE`. The export copies the licence into the artifact's record
(``model.export``); an artifact that records none serves :data:`UNKNOWN_LICENCE` too.

This module imports nothing heavy: the API process, which never loads torch, names licences too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PROJECT_LICENCE", "UNKNOWN_LICENCE", "licence_of"]

PROJECT_LICENCE = "MIT"
"""SPDX id of the project's licence (``pyproject.toml``), and of weights that record no licence of their own."""

UNKNOWN_LICENCE = "unknown"
"""What is served for a model whose artifact, or whose worker's answer, does not say its licence."""


OUR_FORMAT = "dehaze-checkpoint/1"  # model.checkpoint.FORMAT, repeated so that this module stays import-light


def licence_of(raw: Mapping[str, Any]) -> str:
    """SPDX id of the licence of a loaded weights dict: its ``metadata["licence"]``; else :data:`PROJECT_LICENCE` for
    a checkpoint of our format and :data:`UNKNOWN_LICENCE` for anyone else's (e.g. the authors' released files)."""
    metadata = raw.get("metadata")
    recorded = metadata.get("licence") if isinstance(metadata, Mapping) else None
    if recorded:
        return str(recorded)
    return PROJECT_LICENCE if raw.get("format") == OUR_FORMAT else UNKNOWN_LICENCE
