"""Dilated residual dense block (DRDB), the building block of DCMPNet's depth network Ψ.

DCMPNet (Zhang et al., CVPR 2024) builds Ψ from DRDBs and refines the hazy image's depth with a 1-channel DRDB
before it enters the first LEGM of Φ. Layout of the released code: ``layers`` 3×3 convolutions with dilation 2
(zero padding 2), each followed by ReLU, whose outputs are densely concatenated to the input; a 1×1 convolution
back to ``in_ch``; and a residual ``x + ReLU(1×1(·))``. Parameter names (``Dcov1``…, ``conv``) are the authors'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.layout import cat_channels

__all__ = ["DRDB"]


class DRDB(nn.Module):
    """Dilated residual dense block.

    Args:
        in_ch: Input and output channels.
        growth: Channels added by each dilated conv.
        layers: Number of dilated convs.
    """

    def __init__(self, in_ch: int, growth: int = 32, layers: int = 5) -> None:
        super().__init__()
        if min(in_ch, growth, layers) < 1:
            raise ValueError(f"in_ch, growth and layers must be >= 1, got {in_ch}, {growth}, {layers}")
        self.layers = layers
        for i in range(layers):
            conv = nn.Conv2d(in_ch + i * growth, growth, kernel_size=3, padding=2, dilation=2)
            self.add_module(f"Dcov{i + 1}", conv)
        self.conv = nn.Conv2d(in_ch + layers * growth, in_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for i in range(self.layers):
            conv = getattr(self, f"Dcov{i + 1}")
            feats = cat_channels([feats, F.relu(conv(feats))])
        return x + F.relu(self.conv(feats))
