"""Checkpoints: our format, the authors' released format, and loading a ready pipeline from weights.

This module holds DCMPNet's side of the format (Φ and Ψ) and the one entry point that loads any weights file we
know, :func:`load_pipeline_from_weights`; a CORUN network's side of it is :mod:`model.corun_checkpoint` (our format
with ``"family": "corun"``, and the authors' ``CORUN.pth``). A file of our format without ``family`` is DCMPNet's.

Our format (``torch.save`` of a plain dict, loadable with ``weights_only=True``)::

    {"format": "dehaze-checkpoint/1", "variant": name, "phi": state_dict, "psi": state_dict,
     "value_range": [0, 1], "depth_convention": "depth" | "disparity", "metadata": {...}, "extra": {...}?}

``extra`` is optional (e.g. optimiser and scheduler states for resuming training). Files are written atomically
(temporary file in the same folder, then ``os.replace``).

The authors' format (DCMPNet, https://github.com/zhoushen1/DCMPNet) is a dict with ``dehaze_net`` (Φ) and
``depth_net`` (Ψ) state dicts, possibly with ``module.`` prefixes from DataParallel. Their Φ keys equal ours
except for the multi-scale fusion head, which we keep in a :class:`model.dcmpnet.MSAAM` submodule; the lossless
renaming is :data:`OFFICIAL_RENAMES` (no tensor is dropped or reshaped).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.dcmpnet import DCMPNet
from model.depthnet import DepthNet
from model.families import InferencePipeline
from model.pipeline import DehazePipeline
from model.variants import DepthConvention, Variant, get_variant

__all__ = [
    "DEFAULT_WEIGHTS",
    "FORMAT",
    "OFFICIAL_RENAMES",
    "LoadedCheckpoint",
    "from_official_keys",
    "load_checkpoint",
    "load_official",
    "load_pipeline_from_weights",
    "read_weights",
    "save_checkpoint",
    "to_official_keys",
    "variant_of",
    "write_atomically",
]

logger = logging.getLogger(__name__)

FORMAT = "dehaze-checkpoint/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "dcmpnet_t.pt"

# Φ key prefix in the authors' checkpoint -> ours. Applied to the start of a key only; a bijection.
OFFICIAL_RENAMES: dict[str, str] = {
    "ca.": "msaam.ca.",
    "fuse_conv1.": "msaam.fuse_conv1.",
    "fuse_conv2.": "msaam.fuse_conv2.",
    "fuse_conv3.": "msaam.fuse_conv3.",
}


def _rename(state: Mapping[str, torch.Tensor], renames: Mapping[str, str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = next((to + key[len(frm) :] for frm, to in renames.items() if key.startswith(frm)), key)
        out[new] = value
    return out


def from_official_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' Φ state dict with our key names (``module.`` prefixes removed)."""
    return _rename(_strip_module(state), OFFICIAL_RENAMES)


def to_official_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our Φ state dict with the authors' key names (inverse of :func:`from_official_keys`)."""
    return _rename(state, {to: frm for frm, to in OFFICIAL_RENAMES.items()})


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


@dataclass
class LoadedCheckpoint:
    """A checkpoint loaded into networks (in eval mode).

    Attributes:
        phi: Φ with the stored weights.
        psi: Ψ with the stored weights.
        variant: The variant the checkpoint was made for.
        metadata: The checkpoint's metadata (training information).
        raw: The whole loaded dict (including ``extra``, e.g. optimiser states).
        depth_convention: What Ψ predicts, "depth" or "disparity".
    """

    phi: DCMPNet
    psi: DepthNet
    variant: Variant
    metadata: dict[str, Any]
    raw: dict[str, Any]
    depth_convention: DepthConvention = "depth"

    def pipeline(self) -> DehazePipeline:
        """The inference pipeline around these networks, in eval mode."""
        return DehazePipeline(self.phi, self.psi, depth_is_disparity=self.depth_convention == "disparity").eval()


def write_atomically(path: str | Path, write: Callable[[str], None]) -> Path:
    """Runs ``write(tmp)`` on a temporary file next to ``path``, then renames it over ``path``.

    A reader never sees a half-written file, and a failed write leaves the old file in place. The file gets the
    permissions of an ordinary new file (0666 less the umask), not ``mkstemp``'s 0600, so weights and artifacts
    written by one user (e.g. an image build as root) stay readable by the service's own user.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(
    path: str | Path,
    phi: nn.Module,
    psi: nn.Module,
    variant: str | Variant,
    metadata: dict[str, Any],
    extra: dict[str, Any] | None = None,
    depth_convention: DepthConvention | None = None,
) -> Path:
    """Writes our checkpoint format atomically.

    Args:
        path: Destination file.
        phi: Φ (its ``state_dict`` is stored).
        psi: Ψ.
        variant: The variant (or its name) the networks were built from.
        metadata: Training information (plain Python values, so the file loads with ``weights_only=True``).
        extra: Optional additional state, e.g. optimiser states for resuming.
        depth_convention: What Ψ predicts; defaults to the variant's convention.

    Returns:
        The path written.
    """
    spec = get_variant(variant) if isinstance(variant, str) else variant
    convention = depth_convention or spec.depth_convention
    if convention not in ("depth", "disparity"):
        raise ValueError(f"depth_convention must be 'depth' or 'disparity', got {convention!r}")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "variant": spec.name,
        "phi": phi.state_dict(),
        "psi": psi.state_dict(),
        "value_range": [0, 1],
        "depth_convention": convention,
        "metadata": dict(metadata),
    }
    if extra is not None:
        payload["extra"] = extra
    path = Path(path)
    write_atomically(path, lambda tmp: torch.save(payload, tmp))
    logger.info("saved checkpoint %s (variant %s)", path, spec.name)
    return path


def read_weights(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The dict a weights file holds, loaded with ``weights_only=True``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds something other than a dict.
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    raw = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(raw).__name__}")
    return raw


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Loads a checkpoint in our format (strict key and shape check).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not our format, or an unknown variant.
    """
    path = Path(path)
    raw = read_weights(path, map_location)
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (format={raw.get('format')!r})")
    if raw.get("family", "dcmpnet") != "dcmpnet":
        raise ValueError(
            f"{path}: holds a {raw['family']} network ({raw.get('variant')}), not DCMPNet; "
            "load it with load_pipeline_from_weights or model.corun_checkpoint.load_corun_checkpoint"
        )
    variant = get_variant(raw["variant"])
    phi, psi = DCMPNet(variant.phi), DepthNet(variant.psi)
    phi.load_state_dict(raw["phi"], strict=True)
    psi.load_state_dict(raw["psi"], strict=True)
    convention = raw.get("depth_convention", variant.depth_convention)
    return LoadedCheckpoint(phi.eval(), psi.eval(), variant, dict(raw.get("metadata", {})), raw, convention)


def _official_networks(raw: Mapping[str, Any], source: object) -> tuple[DCMPNet, DepthNet]:
    missing = [k for k in ("dehaze_net", "depth_net") if k not in raw]
    if missing:
        raise ValueError(f"{source}: not an official DCMPNet checkpoint, missing {missing}")
    variant = get_variant("dcmpnet")
    phi, psi = DCMPNet(variant.phi), DepthNet(variant.psi)
    phi.load_state_dict(from_official_keys(raw["dehaze_net"]), strict=True)
    psi.load_state_dict(_strip_module(raw["depth_net"]), strict=True)
    return phi.eval(), psi.eval()


def load_official(path: str | Path) -> tuple[DCMPNet, DepthNet]:
    """Loads the authors' released .pth (``dehaze_net`` and ``depth_net``) into the ``dcmpnet`` variant.

    The load is strict. Their Ψ predicts disparity (RA-Depth targets): build the pipeline with
    ``depth_is_disparity=True``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file lacks either entry.
    """
    path = Path(path)
    return _official_networks(read_weights(path, "cpu"), path)


def variant_of(raw: Mapping[str, Any]) -> str | None:
    """The variant a loaded weights dict holds: ours record it, the authors' files are their paper size.

    ``dcmpnet`` for the authors' DCMPNet ``.pth``, ``corun`` for their ``CORUN.pth``, None when unknown.
    """
    from model.corun_checkpoint import OFFICIAL_VARIANT, is_official_corun  # it imports this module

    if "variant" in raw:
        return str(raw["variant"])
    if "dehaze_net" in raw:
        return "dcmpnet"
    return OFFICIAL_VARIANT if is_official_corun(raw) else None


def load_pipeline_from_weights(path: str | Path = DEFAULT_WEIGHTS) -> InferencePipeline:
    """The inference pipeline (eval mode) of any weights file we know, whatever its model family.

    Inputs that a DCMPNet Φ weighs by zero are not computed (:meth:`model.dcmpnet.DCMPNet.prune_unused_inputs`).

    Our checkpoint of a DCMPNet or (``"family": "corun"``) a CORUN variant, the authors' DCMPNet ``.pth`` or their
    ``CORUN.pth``. Both pipelines have the same contract, so callers need not know which they got.

    Raises:
        FileNotFoundError: The weights file does not exist (the default file is produced by training).
        ValueError: A file we do not know, or weights that do not fit their variant.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path}. Train one (`dehaze train`) or pass an existing checkpoint; "
            f"the default is {DEFAULT_WEIGHTS}"
        )
    raw = read_weights(path, "cpu")
    from model.corun_checkpoint import holds_corun, pipeline_from_raw  # it imports this module

    if holds_corun(raw):
        return pipeline_from_raw(raw, path)[0]
    if raw.get("format") == FORMAT:
        pipeline = load_checkpoint(path).pipeline()
        if pruned := pipeline.phi.prune_unused_inputs():
            logger.info("%s: Φ weighs its %s input(s) by zero; not computed", path.name, ", ".join(sorted(pruned)))
        return pipeline
    phi, psi = _official_networks(raw, path)
    return DehazePipeline(phi, psi, depth_is_disparity=True).eval()
