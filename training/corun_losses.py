"""CORUN's pre-training losses (Fang et al., NeurIPS 2024), as the released code optimises them (CORUN.md §2).

    L = w_l1·L1(J_K, J) + w_stage·mean_k<K L1(J_k, J) + w_asm·L1(J_K·T̂_K + 1 − T̂_K, P) + w_p·CR(J_K; J, P)

* **L1 to the clear image** on the final stage's output J_K. The released pre-training supervises only the final
  stage (``stage_l1`` defaults to 0); the intermediate-stage term is there for runs that want deep supervision.
* **ASM re-synthesis**: re-haze the output with the network's own final transmission estimate and A = 1 (the
  released network's fixed airlight) and compare with the input P. The transmission is never supervised directly.
* **Contrastive perceptual** (AECR-Net's ratio, :class:`training.losses.ContrastivePerceptualLoss`, VGG19 relu1_1 to
  relu5_1 with weights 1/32 ... 1): the clear image as positive, the hazy input as negative; only when VGG weights
  are available. Ours normalises with the ImageNet statistics inside the extractor (the released one feeds raw
  [0, 1] values, ``use_input_norm: false``).

Weights default to the released ones: 1, 0, 0.01, 0.2. All norms are means, so nothing grows with the image size.
The released ``clip_loss`` is computed without gradient (a logged number), so it has no counterpart here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from training.losses import ContrastivePerceptualLoss

__all__ = ["CorunLossWeights", "asm_resynthesis", "pretrain_losses", "rehaze"]


@dataclass(frozen=True)
class CorunLossWeights:
    """Weights of the pre-training terms (see the module docstring); the defaults are the released ones."""

    l1: float = 1.0
    stage_l1: float = 0.0
    asm: float = 0.01
    perceptual: float = 0.2

    def __post_init__(self) -> None:
        if min(self.l1, self.stage_l1, self.asm, self.perceptual) < 0:
            raise ValueError(f"loss weights must be >= 0, got {self}")


def rehaze(dehazed: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """The scattering model with A = 1: ``J·T + 1 − T`` (T, N×1×H×W, broadcast over the channels)."""
    return dehazed * trans + (1.0 - trans)


def asm_resynthesis(dehazed: torch.Tensor, trans: torch.Tensor, hazy: torch.Tensor) -> torch.Tensor:
    """``mean|J·T + 1 − T − P|``: how well the output and its transmission explain the hazy input.

    Raises:
        ValueError: Shapes that do not fit (T must be N×1×H×W of the image's N, H, W).
    """
    if dehazed.shape != hazy.shape:
        raise ValueError(f"dehazed {tuple(dehazed.shape)} and hazy {tuple(hazy.shape)} differ in shape")
    if trans.dim() != 4 or trans.shape[1] != 1 or trans.shape[0] != hazy.shape[0] or trans.shape[2:] != hazy.shape[2:]:
        raise ValueError(f"transmission {tuple(trans.shape)} must be N×1×H×W for {tuple(hazy.shape)}")
    return (rehaze(dehazed, trans) - hazy).abs().mean()


def pretrain_losses(
    images: Sequence[torch.Tensor],
    transmissions: Sequence[torch.Tensor],
    clear: torch.Tensor,
    hazy: torch.Tensor,
    weights: CorunLossWeights = CorunLossWeights(),
    perceptual: ContrastivePerceptualLoss | None = None,
) -> dict[str, torch.Tensor]:
    """The weighted pre-training terms; their sum is the loss to minimise.

    Args:
        images: J_1 ... J_K in stage order (:meth:`model.corun.CORUN.forward_stages`); the last is the output.
        transmissions: T̂_1 ... T̂_K in the same order.
        clear: The target J, N×3×H×W.
        hazy: The input P, N×3×H×W.
        weights: The terms' weights.
        perceptual: The VGG ratio term, or ``None`` (then its entry is 0).

    Returns:
        ``{"l1", "stage_l1", "asm", "perceptual"}``, each a weighted scalar (0 when its weight is 0 or it is off).

    Raises:
        ValueError: No stages, or image and transmission lists of different lengths.
    """
    if not images or len(images) != len(transmissions):
        raise ValueError(f"need K >= 1 images and as many transmissions, got {len(images)} and {len(transmissions)}")
    out, trans = images[-1], transmissions[-1]
    zero = out.new_zeros(())
    terms = {"l1": weights.l1 * (out - clear).abs().mean(), "stage_l1": zero, "asm": zero, "perceptual": zero}
    if weights.stage_l1 > 0 and len(images) > 1:
        stage = torch.stack([(j - clear).abs().mean() for j in images[:-1]]).mean()
        terms["stage_l1"] = weights.stage_l1 * stage
    if weights.asm > 0:
        terms["asm"] = weights.asm * asm_resynthesis(out, trans, hazy)
    if perceptual is not None and weights.perceptual > 0:
        terms["perceptual"] = weights.perceptual * perceptual(out, clear, hazy)
    return terms
