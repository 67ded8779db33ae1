"""The depth network Ψ of DCMPNet (``DepthNet.DN`` in the authors' code).

DCMPNet (Zhang et al., CVPR 2024, https://github.com/zhoushen1/DCMPNet). Layout of the released code: a DRDB at
full resolution, four stride-2 3×3 convs each followed by a DRDB (down to H/16), four 4×4 stride-2 transposed
convs (the first three followed by a DRDB) back to 3 channels, and a 1×1 conv to one channel. There are no skips
and no final activation: the output is an unbounded raw map. With the authors' weights it is a disparity
(their targets were RA-Depth disparities); with ours it is a depth (0 near).

Module names (``DRDB_layer1``, ``conv1``, ``up1``, ``final_conv``) are the authors'.
"""

from __future__ import annotations

import torch
from torch import nn

from model.drdb import DRDB
from model.variants import PsiConfig

__all__ = ["DepthNet"]


class DepthNet(nn.Module):
    """Ψ: image in [0, 1] -> raw depth map.

    Works at any size >= 1 px: the stride-2 convs round up and the output is cropped to the input size, so no
    padding is needed.

    Args:
        cfg: Widths and DRDB settings.
    """

    def __init__(self, cfg: PsiConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or PsiConfig()
        self.cfg = cfg
        w = (3, *cfg.widths)
        for i in range(4):
            self.add_module(f"DRDB_layer{i + 1}", DRDB(w[i], cfg.growth, cfg.layers))
            self.add_module(f"conv{i + 1}", nn.Conv2d(w[i], w[i + 1], kernel_size=3, stride=2, padding=1))
        self.DRDB_layer5 = DRDB(w[4], cfg.growth, cfg.layers)
        for i in range(4):
            self.add_module(f"up{i + 1}", nn.ConvTranspose2d(w[4 - i], w[3 - i], kernel_size=4, stride=2, padding=1))
            if i < 3:
                self.add_module(f"DRDB_layer{i + 6}", DRDB(w[3 - i], cfg.growth, cfg.layers))
        self.final_conv = nn.Conv2d(3, 1, kernel_size=1)

    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        """Raw depth N×1×H×W of an N×3×H×W image in [0, 1]."""
        return self.forward_signed(image01 * 2.0 - 1.0)

    def forward_signed(self, x: torch.Tensor) -> torch.Tensor:
        """Raw depth of an image already in [-1, 1] (how the authors' code calls it, also inside Φ)."""
        h, w = x.shape[-2:]
        y = x
        for i in range(1, 5):
            y = getattr(self, f"conv{i}")(getattr(self, f"DRDB_layer{i}")(y))
        y = self.DRDB_layer5(y)
        for i in range(1, 5):
            y = getattr(self, f"up{i}")(y)
            if i < 4:
                y = getattr(self, f"DRDB_layer{i + 5}")(y)
        return self.final_conv(y)[:, :, :h, :w]
