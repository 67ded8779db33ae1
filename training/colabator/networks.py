"""The networks Colabator fine-tunes, one adapter per model family, and their fine-tuning losses.

Colabator is plug-and-play: the loop (:mod:`training.colabator.finetune`) never looks inside a network. It needs
four things of a family, which each adapter here provides:

* ``forward(hazy)`` for training (raw outputs on crops) and ``infer(hazy)`` for labels (the inference pipeline:
  any size, clamped to [0, 1], exactly what ``dehaze run`` computes);
* ``losses(synthetic, real, weights)``: the family's terms on one synthetic and one real batch;
* ``save(path, metadata, extra)``: our checkpoint format for that family, so the result loads like any checkpoint
  of it (``dehaze run``, ``dehaze evaluate``, the service).

Terms common to both families: ``synthetic`` = L1(out, clear) on the synthetic pairs (the supervised term the
released Colabator keeps during fine-tuning) and ``real`` = mean(trust · |out − label|) on the strongly augmented
real crop against the pool label.

**DCMPNet** keeps its depth network Ψ trained, so Φ keeps receiving a sensible depth on real photos: ``depth`` =
L1(Ψ(hazy), true depth) on the synthetic pairs, and ``real_depth`` = mean(confidence · |Ψ(strong) − d|) where d is
the physics pseudo-depth of the pool label (:func:`training.pseudo_depth.pseudo_depth`, computed once when the
label enters the pool, so it costs nothing per step). Φ takes Ψ's depth detached, as in ``dehaze train``'s Φ step,
so Φ's terms do not train Ψ. The difference perceptrons and Eq. 5/11 of ``dehaze train`` are not used: the
released Colabator fine-tunes with plain and trust-weighted L1.

**CORUN** adds the released code's ASM re-synthesis term on the real crop, ``asm`` = mean(trust · |J·T̂ + 1 − T̂ − P|)
with P the strongly augmented input (A = 1, as the network assumes). Its transmission is otherwise unsupervised,
as in the released code.

Accepted starting checkpoints: ours of either family, and the authors' ``CORUN.pth``. The authors' DCMPNet ``.pth``
is not accepted: its Ψ predicts RA-Depth disparity, which our depth terms would have to flip (save it in our format
first).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import FORMAT, load_checkpoint, read_weights, save_checkpoint
from model.corun import CORUN
from model.corun_checkpoint import holds_corun, load_corun_checkpoint, save_corun_checkpoint
from model.dcmpnet import DCMPNet
from model.depthnet import DepthNet
from model.pipeline import DehazePipeline
from model.variants import DepthConvention, Variant
from training.colabator.config import FinetuneLossConfig

__all__ = ["CorunStudent", "DcmpnetStudent", "FinetuneNet", "asm_residual", "load_finetune_net", "weighted_l1"]


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean(weight · |pred − target|), the weight N×1×H×W broadcast over channels."""
    return ((pred - target).abs() * weight).mean()


def asm_residual(dehazed: torch.Tensor, trans: torch.Tensor, hazy: torch.Tensor) -> torch.Tensor:
    """|J·T + 1 − T − P| per pixel: how far the scattering model with A = 1 is from reproducing the input."""
    return (dehazed * trans + 1.0 - trans - hazy).abs()


class FinetuneNet(Protocol):
    """What the fine-tuning loop needs of a network (both adapters below are ``nn.Module``s)."""

    family: str
    variant: str
    needs_depth: bool

    def infer(self, hazy01: torch.Tensor) -> torch.Tensor:
        """The inference pipeline's dehazed output (clamped), any size."""
        ...

    def losses(
        self, synthetic: Mapping[str, torch.Tensor], real: Mapping[str, torch.Tensor], w: FinetuneLossConfig
    ) -> dict[str, torch.Tensor]:
        """The weighted loss terms on one synthetic and one real batch."""
        ...

    def save(self, path: Path, metadata: dict[str, Any], extra: dict[str, Any]) -> Path:
        """Writes our checkpoint format of the family (atomically)."""
        ...


class DcmpnetStudent(nn.Module):
    """DCMPNet (Φ and Ψ) behind the fine-tuning contract.

    Args:
        phi: Φ.
        psi: Ψ.
        variant: The registered variant.
        depth_convention: What Ψ predicts (the checkpoint's field); the depth targets follow it.
    """

    family = "dcmpnet"
    needs_depth = True

    def __init__(self, phi: DCMPNet, psi: DepthNet, variant: Variant, depth_convention: DepthConvention) -> None:
        super().__init__()
        self.phi, self.psi = phi, psi
        self.spec = variant
        self.variant = variant.name
        self.depth_convention = depth_convention

    @property
    def min_size(self) -> int:
        """Smallest training crop Φ accepts (``infer`` pads smaller images itself)."""
        return self.phi.min_size

    def forward(self, hazy01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Φ's raw output, Ψ's raw depth) of a batch; Φ gets Ψ's depth detached (or uses its own ``dpn``)."""
        depth = self.psi(hazy01)
        out = self.phi(hazy01, None if self.phi.dpn is not None else depth.detach())
        return out, depth

    def infer(self, hazy01: torch.Tensor) -> torch.Tensor:
        """The dehazed image as :class:`model.pipeline.DehazePipeline` computes it."""
        return DehazePipeline(self.phi, self.psi, self.depth_convention == "disparity")(hazy01)[0]

    def _depth_target(self, depth: torch.Tensor) -> torch.Tensor:
        return 1.0 - depth if self.depth_convention == "disparity" else depth

    def losses(
        self, synthetic: Mapping[str, torch.Tensor], real: Mapping[str, torch.Tensor], w: FinetuneLossConfig
    ) -> dict[str, torch.Tensor]:
        """``synthetic``, ``depth``, ``real`` and ``real_depth`` (see the module docstring), weighted."""
        out_s, depth_s = self(synthetic["hazy"])
        out_r, depth_r = self(real["strong"])
        return {
            "synthetic": w.synthetic_weight * F.l1_loss(out_s, synthetic["clear"]),
            "depth": w.depth_weight * F.l1_loss(depth_s, self._depth_target(synthetic["depth"])),
            "real": w.real_weight * weighted_l1(out_r, real["label"], real["trust"]),
            "real_depth": w.real_depth_weight * weighted_l1(depth_r, self._depth_target(real["depth"]), real["conf"]),
        }

    def save(self, path: Path, metadata: dict[str, Any], extra: dict[str, Any]) -> Path:
        """Our DCMPNet checkpoint format (Φ, Ψ, variant, depth convention)."""
        return save_checkpoint(path, self.phi, self.psi, self.spec, metadata, extra, self.depth_convention)


class CorunStudent(nn.Module):
    """CORUN behind the fine-tuning contract.

    Args:
        net: The network.
        variant: The registered variant.
    """

    family = "corun"
    needs_depth = False
    min_size = 1

    def __init__(self, net: CORUN, variant: str) -> None:
        super().__init__()
        self.net = net
        self.variant = variant

    def forward(self, hazy01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(J_K, T̂_K) of a batch, J_K not clamped."""
        return self.net(hazy01)

    def infer(self, hazy01: torch.Tensor) -> torch.Tensor:
        """The dehazed image as :class:`model.corun_pipeline.CorunPipeline` computes it (clamped)."""
        return self.net(hazy01)[0].clamp(0.0, 1.0)

    def losses(
        self, synthetic: Mapping[str, torch.Tensor], real: Mapping[str, torch.Tensor], w: FinetuneLossConfig
    ) -> dict[str, torch.Tensor]:
        """``synthetic``, ``real`` and ``asm`` (see the module docstring), weighted."""
        out_s, _ = self(synthetic["hazy"])
        out_r, trans_r = self(real["strong"])
        return {
            "synthetic": w.synthetic_weight * F.l1_loss(out_s, synthetic["clear"]),
            "real": w.real_weight * weighted_l1(out_r, real["label"], real["trust"]),
            "asm": w.asm_weight * (asm_residual(out_r, trans_r, real["strong"]) * real["trust"]).mean(),
        }

    def save(self, path: Path, metadata: dict[str, Any], extra: dict[str, Any]) -> Path:
        """Our CORUN checkpoint format (``"family": "corun"``)."""
        return save_corun_checkpoint(path, self.net, self.variant, metadata, extra)


def load_finetune_net(path: str | Path) -> DcmpnetStudent | CorunStudent:
    """The network of a checkpoint, wrapped for fine-tuning, in train mode.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a checkpoint Colabator can start from (see the module docstring).
    """
    path = Path(path)
    raw = read_weights(path, "cpu")
    if holds_corun(raw):
        loaded = load_corun_checkpoint(path)
        return CorunStudent(loaded.net, loaded.variant).train()
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: fine-tuning starts from our checkpoint format or the authors' CORUN.pth")
    ckpt = load_checkpoint(path)
    return DcmpnetStudent(ckpt.phi, ckpt.psi, ckpt.variant, ckpt.depth_convention).train()
