"""CORUN weights: our checkpoint format holding a CORUN network, and the authors' released ``CORUN.pth``.

Our format is :mod:`model.checkpoint`'s, with the model family recorded and one network instead of Φ and Ψ::

    {"format": "dehaze-checkpoint/1", "family": "corun", "variant": name, "net": state_dict,
     "value_range": [0, 1], "metadata": {...}, "extra": {...}?}

A file of our format without ``family`` is a DCMPNet checkpoint (every file written before CORUN joined), so those
load unchanged. The variant's configuration is rebuilt from the registry (:func:`model.corun.get_corun_config`)
and the weights load with ``strict=True``: a file whose variant and weights disagree fails loudly.

The authors' file (BasicSR's format, ``cnyvfang/CORUN-Colabator``) is ``{"params_ema": state_dict}``, possibly
with ``params`` beside it; the EMA weights are the ones their inference uses, so ``params_ema`` wins. Their keys
equal ours for the ``corun`` variant (``tests/model/test_corun.py`` checks every key and shape against their
listing), so the load is strict with no renaming; ``module.`` prefixes from DataParallel are stripped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import FORMAT, read_weights, write_atomically
from model.corun import CORUN, create_corun, get_corun_config
from model.corun_pipeline import CorunPipeline

__all__ = [
    "FAMILY",
    "OFFICIAL_KEYS",
    "OFFICIAL_VARIANT",
    "LoadedCorun",
    "holds_corun",
    "is_corun_checkpoint",
    "is_official_corun",
    "load_corun_checkpoint",
    "load_official_corun",
    "pipeline_from_raw",
    "save_corun_checkpoint",
]

logger = logging.getLogger(__name__)

FAMILY = "corun"
OFFICIAL_KEYS = ("params_ema", "params")  # in order of preference
OFFICIAL_VARIANT = "corun"  # the only size the authors released


@dataclass
class LoadedCorun:
    """A CORUN checkpoint loaded into its network (in eval mode).

    Attributes:
        net: The network with the stored weights.
        variant: The registered variant name.
        metadata: The checkpoint's metadata (empty for the authors' file).
        raw: The whole loaded dict (including ``extra``).
    """

    net: CORUN
    variant: str
    metadata: dict[str, Any]
    raw: dict[str, Any]

    def pipeline(self) -> CorunPipeline:
        """The inference pipeline around this network, in eval mode."""
        return CorunPipeline(self.net).eval()


def save_corun_checkpoint(
    path: str | Path, net: CORUN, variant: str, metadata: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Writes a CORUN network in our checkpoint format, atomically.

    Args:
        path: Destination file.
        net: The network (its ``state_dict`` is stored).
        variant: The registered variant ``net`` was built from.
        metadata: Training information (plain Python values, so the file loads with ``weights_only=True``).
        extra: Optional additional state, e.g. optimiser states for resuming.

    Returns:
        The path written.

    Raises:
        ValueError: Unknown variant, or ``net`` was not built with that variant's configuration.
    """
    if net.cfg != get_corun_config(variant):
        raise ValueError(f"the network's configuration is not variant {variant!r}'s: {net.cfg}")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "family": FAMILY,
        "variant": variant,
        "net": net.state_dict(),
        "value_range": [0, 1],
        "metadata": dict(metadata),
    }
    if extra is not None:
        payload["extra"] = extra
    path = Path(path)
    write_atomically(path, lambda tmp: torch.save(payload, tmp))
    logger.info("saved checkpoint %s (variant %s)", path, variant)
    return path


def is_corun_checkpoint(raw: Mapping[str, Any]) -> bool:
    """Whether a loaded weights dict is our format holding a CORUN network."""
    return raw.get("format") == FORMAT and raw.get("family") == FAMILY


def is_official_corun(raw: Mapping[str, Any]) -> bool:
    """Whether a loaded weights dict looks like the authors' ``CORUN.pth`` (a BasicSR dict of state dicts)."""
    return raw.get("format") is None and any(isinstance(raw.get(key), Mapping) for key in OFFICIAL_KEYS)


def holds_corun(raw: Mapping[str, Any]) -> bool:
    """Whether a loaded weights dict holds a CORUN network, in our format or the authors'."""
    return is_corun_checkpoint(raw) or is_official_corun(raw)


def _network(variant: str, state: Mapping[str, torch.Tensor]) -> CORUN:
    net = create_corun(variant)
    try:
        net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    except RuntimeError as error:  # missing, unexpected or mis-shaped keys
        raise ValueError(f"the weights do not fit CORUN variant {variant!r}: {error}") from error
    return net.eval()


def _loaded(raw: dict[str, Any], source: object) -> LoadedCorun:
    if is_corun_checkpoint(raw):
        variant = str(raw["variant"])
        return LoadedCorun(_network(variant, raw["net"]), variant, dict(raw.get("metadata", {})), raw)
    if is_official_corun(raw):
        state = next(raw[key] for key in OFFICIAL_KEYS if isinstance(raw.get(key), Mapping))
        return LoadedCorun(_network(OFFICIAL_VARIANT, state), OFFICIAL_VARIANT, {}, raw)
    raise ValueError(f"{source}: holds no CORUN network (neither our format with family 'corun' nor params_ema)")


def load_corun_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCorun:
    """Loads a CORUN network from our checkpoint format or the authors' ``CORUN.pth`` (strict).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds no CORUN network, names an unknown variant, or its weights do not fit it.
    """
    path = Path(path)
    return _loaded(read_weights(path, map_location), path)


def load_official_corun(path: str | Path) -> CORUN:
    """The authors' released ``CORUN.pth`` loaded strictly into the ``corun`` variant (eval mode).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file has neither ``params_ema`` nor ``params``, or their keys or shapes differ from ours.
    """
    path = Path(path)
    raw = read_weights(path, "cpu")
    if not is_official_corun(raw):
        raise ValueError(f"{path}: not the authors' CORUN checkpoint (no {' or '.join(OFFICIAL_KEYS)})")
    return _loaded(raw, path).net


def pipeline_from_raw(raw: dict[str, Any], source: object) -> tuple[CorunPipeline, str]:
    """The inference pipeline (eval mode) and variant name of a loaded weights dict that :func:`holds_corun`.

    Raises:
        ValueError: As :func:`load_corun_checkpoint`.
    """
    loaded = _loaded(raw, source)
    return loaded.pipeline(), loaded.variant
