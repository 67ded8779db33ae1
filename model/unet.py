"""The U-Net pre-stage of DCMPNet's dehazing network Φ.

DCMPNet (Zhang et al., CVPR 2024) runs a Milesial-style U-Net (github.com/milesial/Pytorch-UNet, its early
layout) on the padded hazy image and feeds three of its outputs into the three encoder stages of Φ. Layout of the
released code: DoubleConv = 2 × (3×3 conv + BatchNorm + ReLU); widths base·(1, 2, 4, 8, 8) with 2×2 max-pooling;
bilinear ×2 upsampling with ``align_corners=True``, zero-padded to the skip's size, then ``cat([skip, up])``.
Module names (``inc``, ``down1.mpconv``, ``up1.conv``, ``outc``) are the authors'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.layout import cat_channels

__all__ = ["DoubleConv", "Down", "UNet", "Up"]


class DoubleConv(nn.Module):
    """Two 3×3 conv + BatchNorm + ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Down(nn.Module):
    """2×2 max-pool, then DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mpconv(x)


class Up(nn.Module):
    """Bilinear ×2 upsampling, zero-pad to the skip's size, ``cat([skip, up])``, DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(cat_channels([skip, x]))


class UNet(nn.Module):
    """The U-Net pre-stage; returns features at three scales.

    Needs inputs of at least 16 px per side (four 2× poolings).

    Args:
        base: Width of the first level (64 in the paper).

    Returns (from ``forward``):
        ``(d1, d2, d3)``: the up2 output (2·base channels, H/4), the up3 output (base channels, H/2) and the
        3-channel ``outc`` output at H.
    """

    def __init__(self, base: int = 64) -> None:
        super().__init__()
        if base < 1:
            raise ValueError(f"base must be >= 1, got {base}")
        b = base
        self.inc = DoubleConv(3, b)
        self.down1 = Down(b, 2 * b)
        self.down2 = Down(2 * b, 4 * b)
        self.down3 = Down(4 * b, 8 * b)
        self.down4 = Down(8 * b, 8 * b)
        self.up1 = Up(16 * b, 4 * b)
        self.up2 = Up(8 * b, 2 * b)
        self.up3 = Up(4 * b, b)
        self.up4 = Up(2 * b, b)
        self.outc = nn.Conv2d(b, 3, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        y = self.up1(x5, x4)
        d1 = self.up2(y, x3)
        d2 = self.up3(d1, x2)
        d3 = self.outc(self.up4(d2, x1))
        return d1, d2, d3
