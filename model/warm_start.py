"""The warm start of Φ from a trained DehazeFormer (Song et al., "Vision Transformers for Single Image Dehazing",
IEEE TIP 2023).

DCMPNet's Φ is a DehazeFormer with extra inputs: a U-Net pre-stage, the hazy image's depth through a DRDB, MSAAM, and
a 1×1 fusion convolution over a concatenation in front of every stage. Built with DehazeFormer's backbone settings,
its soft-reconstruction head and the decoder fed from the third LEGM (``PhiConfig.soft_reconstruction``,
``PhiConfig.decoder_from_legm3``; the ``dcmpnet_t`` variant), Φ holds every tensor of a DehazeFormer checkpoint under
the names of :data:`DEHAZEFORMER_RENAMES`. :func:`warm_start_phi` loads them and sets every fusion convolution to pass
the backbone's channels through unchanged (identity on them, zero on the added ones, zero bias), so that Φ computes
exactly the DehazeFormer's function whatever the U-Net, DRDB, MSAAM and depth produce; training then decides how much
of the added inputs to use.

Weights loaded this way keep the checkpoint's licence (the shipped DehazeFormer-T file is GPL-3.0); this code does
not derive from them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from model.dcmpnet import DCMPNet

__all__ = [
    "BACKBONE_PREFIXES",
    "DEHAZEFORMER_RENAMES",
    "WarmStartError",
    "backbone_parameter_names",
    "dehazeformer_to_phi_keys",
    "pass_through_fusions",
    "read_dehazeformer",
    "warm_start_phi",
]

logger = logging.getLogger(__name__)

# DehazeFormer key prefix -> Φ's (applied to the start of a key); every other prefix is the same in both.
DEHAZEFORMER_RENAMES: dict[str, str] = {
    **{f"layer{i}.": f"legm{i}." for i in range(1, 6)},
    "fusion1.": "mfm1.",
    "fusion2.": "mfm2.",
}

# Φ's modules that hold a DehazeFormer's tensors (the backbone); everything else in Φ is DCMPNet's addition.
BACKBONE_PREFIXES: tuple[str, ...] = (
    "patch_embed.",
    *(f"legm{i}." for i in range(1, 6)),
    "patch_merge1.",
    "patch_merge2.",
    "skip1.",
    "skip2.",
    "patch_split1.",
    "patch_split2.",
    "mfm1.",
    "mfm2.",
    "patch_unembed.",
)

# Each fusion convolution of Φ and which slice of its input is the backbone's (first or second part of the
# concatenation); see DCMPNet.forward_with_features for the order of each concatenation.
_FUSIONS: dict[str, str] = {
    "conv1": "first",  # [patch_embed, U-Net d3, DRDB depth]
    "conv2": "first",  # [patch_merge1, d2]
    "conv3": "first",  # [patch_merge2, d1]
    "conv4": "first",  # [patch_split1 + MFM, d2]
    "conv5": "first",  # [patch_split2 + MFM, d3]
    "conv_d1": "second",  # [MSAAM H/4, legm3]
    "conv_d2": "second",  # [MSAAM H/2, legm4]
}


class WarmStartError(ValueError):
    """A DehazeFormer checkpoint that does not fit Φ (a missing, unexpected or differently shaped tensor)."""


def read_dehazeformer(path: str | Path) -> dict[str, torch.Tensor]:
    """A DehazeFormer checkpoint's state dict with its own key names, ``module.`` prefixes removed.

    Accepts the authors' ``{'state_dict': …}`` and a bare state dict.

    Raises:
        WarmStartError: The file holds no state dict.
    """
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WarmStartError(f"{path}: not a DehazeFormer checkpoint (no state dict of tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def dehazeformer_to_phi_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DehazeFormer state dict under Φ's key names (DEHAZEFORMER.md §2)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = next((to + key[len(frm) :] for frm, to in DEHAZEFORMER_RENAMES.items() if key.startswith(frm)), key)
        out[new] = value
    return out


def backbone_parameter_names(phi: nn.Module) -> set[str]:
    """Names of Φ's parameters that a warm start fills (the DehazeFormer backbone)."""
    return {name for name, _ in phi.named_parameters() if name.startswith(BACKBONE_PREFIXES)}


def _check_fits(phi: DCMPNet, mapped: Mapping[str, torch.Tensor], source: object) -> None:
    """Raises :class:`WarmStartError` naming the first tensor that does not fit Φ."""
    if not (phi.cfg.soft_reconstruction and phi.cfg.decoder_from_legm3):
        raise WarmStartError(
            "a DehazeFormer warm start needs Φ with soft_reconstruction and decoder_from_legm3 (e.g. variant dcmpnet_t)"
        )
    target = {k: v for k, v in phi.state_dict().items() if k.startswith(BACKBONE_PREFIXES)}
    for key, value in mapped.items():
        if key not in target:
            raise WarmStartError(f"{source}: tensor {key!r} has no place in Φ's backbone")
        if tuple(value.shape) != tuple(target[key].shape):
            raise WarmStartError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, Φ needs {tuple(target[key].shape)}"
            )
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise WarmStartError(f"{source}: Φ's backbone tensor {missing[0]!r} is missing ({len(missing)} in all)")


@torch.no_grad()
def pass_through_fusions(phi: DCMPNet) -> None:
    """Sets every fusion convolution to copy the backbone's channels and ignore the added ones (zero bias)."""
    for name, part in _FUSIONS.items():
        conv = getattr(phi, name)
        out_ch = conv.out_channels
        start = 0 if part == "first" else conv.in_channels - out_ch
        conv.weight.zero_()
        conv.weight[:, start : start + out_ch, 0, 0] = torch.eye(out_ch, dtype=conv.weight.dtype)
        if conv.bias is not None:
            conv.bias.zero_()


def warm_start_phi(phi: DCMPNet, path: str | Path) -> int:
    """Loads a DehazeFormer checkpoint into Φ's backbone and makes the fusions pass it through.

    After this, ``phi`` computes the DehazeFormer's output exactly (to float rounding) for any U-Net, DRDB, MSAAM
    weights and any depth. Φ's other parameters are left as they are.

    Args:
        phi: Φ built with the checkpoint's backbone settings (variant ``dcmpnet_t`` for DehazeFormer-T).
        path: The checkpoint (``{'state_dict': …}`` with or without ``module.`` prefixes).

    Returns:
        The number of tensors loaded.

    Raises:
        WarmStartError: A tensor is missing, unexpected or of another shape; the message names the first one.
    """
    mapped = dehazeformer_to_phi_keys(read_dehazeformer(path))
    _check_fits(phi, mapped, path)
    phi.load_state_dict(mapped, strict=False)
    pass_through_fusions(phi)
    logger.info("Φ warm-started from %s (%d tensors); fusion convolutions pass the backbone through", path, len(mapped))
    return len(mapped)
