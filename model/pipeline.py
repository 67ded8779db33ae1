"""The inference pipeline: hazy image -> (dehazed image, depth map), one module that traces to one artifact.

Ψ runs on the hazy input and Φ uses that depth (the paper's Eq. 4), except for the authors' layout
(``dcmpnet``), whose Φ computes the hazy depth with its own private depth net; Ψ still gives the returned depth.

Any N×3×H×W with H, W >= 1 works: images smaller than Φ's minimum are replicate-padded (reflect padding fails
when the pad is not smaller than the image) and both outputs are cropped back. The pad amounts are computed with
branch-free arithmetic, so a traced pipeline keeps them symbolic and serves every size and batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.dcmpnet import DCMPNet
from model.depthnet import DepthNet
from model.variants import get_variant

__all__ = ["DehazePipeline", "build_pipeline", "depth_to_unit", "pad_to_min_size"]


def depth_to_unit(raw: torch.Tensor, is_disparity: bool) -> torch.Tensor:
    """Ψ's raw output -> depth in [0, 1] with 0 = near, 1 = far.

    Depth is clamped to [0, 1]; a disparity (large = near, e.g. RA-Depth targets of the authors' weights) is
    clamped and flipped, ``1 - clamp(disp, 0, 1)``.
    """
    unit = raw.clamp(0.0, 1.0)
    return 1.0 - unit if is_disparity else unit


def _shortfall(size: int, minimum: int) -> int:
    """``max(minimum - size, 0)`` without a comparison, so tracing records it instead of freezing it.

    Under tracing ``size`` is a 0-dim tensor standing for the int; the arithmetic stays in the graph.
    """
    diff = minimum - size
    return (diff + abs(diff)) // 2


def pad_to_min_size(x: torch.Tensor, minimum: int) -> torch.Tensor:
    """Replicate-pads bottom/right up to ``minimum`` px a side (reflect padding fails when the pad is not smaller
    than the image); traceable, the amounts stay symbolic."""
    h, w = x.shape[-2:]
    return F.pad(x, [0, _shortfall(w, minimum), 0, _shortfall(h, minimum)], mode="replicate")


class DehazePipeline(nn.Module):
    """Φ and Ψ behind the model's value contract (images in [0, 1], depth 0 = near, 1 = far).

    Args:
        phi: The dehazing network.
        psi: The depth network.
        depth_is_disparity: Ψ predicts disparity (the authors' weights) rather than depth (ours).
    """

    def __init__(self, phi: DCMPNet, psi: DepthNet, depth_is_disparity: bool = False) -> None:
        super().__init__()
        self.phi = phi
        self.psi = psi
        self.depth_is_disparity = depth_is_disparity
        self.min_size = phi.min_size

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dehazes a batch.

        Args:
            x01: N×3×H×W hazy RGB in [0, 1], any H, W >= 1.

        Returns:
            ``(dehazed, depth)``: N×3×H×W clamped to [0, 1] and N×1×H×W in [0, 1] (0 = near).
        """
        if not torch.jit.is_tracing() and (x01.dim() != 4 or x01.shape[1] != 3):
            raise ValueError(f"expected an N×3×H×W image batch, got {tuple(x01.shape)}")
        h, w = x01.shape[-2:]
        x = pad_to_min_size(x01, self.min_size)
        raw = self.psi(x)
        dehazed = self.phi(x, None if self.phi.dpn is not None else raw)
        dehazed = dehazed[:, :, :h, :w].clamp(0.0, 1.0)
        return dehazed, depth_to_unit(raw[:, :, :h, :w], self.depth_is_disparity)


def build_pipeline(variant_name: str) -> DehazePipeline:
    """A randomly initialised pipeline of a registered variant, in eval mode."""
    variant = get_variant(variant_name)
    pipeline = DehazePipeline(
        DCMPNet(variant.phi), DepthNet(variant.psi), depth_is_disparity=variant.depth_convention == "disparity"
    )
    return pipeline.eval()
