"""The CORUN inference pipeline: hazy image -> (dehazed image, depth map), with DCMPNet's pipeline contract.

:class:`CorunPipeline` is to CORUN what :class:`model.pipeline.DehazePipeline` is to DCMPNet: RGB in [0, 1],
N×3×H×W with any H, W >= 1, in; the dehazed image clamped to [0, 1] (N×3×H×W) and a depth map in [0, 1] with
0 = near (N×1×H×W) out. The export, the worker, its tiling and every command use either one without knowing which.
The padding to CORUN's multiple of 8 and the crop back happen inside :meth:`model.corun.CORUN.forward`, with
branch-free arithmetic, so the traced artifact serves every batch size and image size.

CORUN has no depth network. Its depth is derived from its final transmission estimate T̂_K (TGDM's closed form,
already clamped to [0.05, 0.999]) through the scattering model t = exp(−β·d), so d ∝ −ln t:

    depth = −ln(clamp(t, 0.05, 1)) / −ln(0.05)

0 where t = 1 (no haze between the camera and the scene), 1 at TGDM's floor t = 0.05 (the densest haze the
network can express). The scale is fixed, not fitted to each image, on purpose: the worker dehazes large images in
tiles and stitches the outputs, and a per-image normalisation would be a per-tile one there, each tile with its
own scale and a seam at every boundary. A fixed scale gives the same value for a pixel whatever the tiling, the
batch or the crop, and keeps the depth proportional to −ln t (no offset), which is what median-scaled depth metrics
assume. The price: the map spans [0, 1] only in very dense haze (light haze gives a dark map), and its unit is β
times distance, so two photos' maps compare only when their haze has the same density per metre.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.corun import CORUN, T_MIN, create_corun

__all__ = ["DEPTH_SCALE", "CorunPipeline", "build_corun_pipeline", "transmission_to_depth"]

DEPTH_SCALE = -math.log(T_MIN)
"""−ln of TGDM's transmission floor: the optical depth that maps to depth 1."""


def transmission_to_depth(trans: torch.Tensor) -> torch.Tensor:
    """A transmission map in (0, 1] -> a depth in [0, 1] (0 = near): ``−ln(clamp(t, 0.05, 1)) / −ln(0.05)``.

    Values below TGDM's floor (0.05) map to 1 and values above 1 to 0, so any input gives a finite map.
    """
    optical_depth = -torch.log(trans.clamp(T_MIN, 1.0))
    return (optical_depth / DEPTH_SCALE).clamp(0.0, 1.0)


class CorunPipeline(nn.Module):
    """CORUN behind the pipeline's value contract (images in [0, 1], depth 0 = near, 1 = far).

    Args:
        net: The CORUN network.
    """

    def __init__(self, net: CORUN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dehazes a batch.

        Args:
            x01: N×3×H×W hazy RGB in [0, 1], any H, W >= 1.

        Returns:
            ``(dehazed, depth)``: N×3×H×W clamped to [0, 1] and N×1×H×W in [0, 1] (0 = near), the depth derived
            from the transmission map (see the module docstring).
        """
        dehazed, trans = self.net(x01)
        return dehazed.clamp(0.0, 1.0), transmission_to_depth(trans)


def build_corun_pipeline(variant_name: str) -> CorunPipeline:
    """A randomly initialised pipeline of a registered CORUN variant, in eval mode.

    Raises:
        ValueError: Unknown variant; the message lists the choices.
    """
    return CorunPipeline(create_corun(variant_name)).eval()
