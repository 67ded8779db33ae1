"""LKD-Net, a published RESIDE-trained dehazer used as a teacher for DCMPNet (never served).

Paper: "LKD-Net: Large Kernel Convolution Network for Single Image Dehazing" (ICME 2023, SWU-CS-MediaLab,
https://github.com/SWU-CS-MediaLab/LKD-Net, MIT licence). This is our own implementation, written from a
layer-by-layer description of the released code (the facts that matter are in the docstrings here and in
``training/teachers/weights/README.md``); module names equal the released state-dict keys, so the authors'
four checkpoints load with ``strict=True`` once their ``module.`` prefix is gone.

The network: a 5-stage U-shape (widths 24/48/96/48/24) of :class:`LKDBlock` stacks. A block is a decomposed
large-kernel conv half (BN, 1×1, depthwise 5×5, depthwise 7×7 dilation 3, 1×1; no activation) and a channel
enhanced feed-forward half (:class:`CEFN`). The decoder joins the encoder through SK-fusion (our
:class:`model.dcmpnet.MFM`, the same module); the head
predicts ``K`` (1 channel) and ``B`` (3 channels) and returns ``K·x − B + x`` on the [-1, 1] input.

:class:`LKDTeacher` wraps it with the project's image contract (RGB in [0, 1] in and out, any size).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.dcmpnet import MFM  # DehazeFormer's SKFusion, the same module (and state-dict keys) LKD-Net uses

__all__ = [
    "CEFN",
    "LKD_VARIANTS",
    "LKDBlock",
    "LKDNet",
    "LKDTeacher",
    "LayerNormCHW",
    "load_lkd",
]

PAD_MULTIPLE = 4
MIN_SIDE = 37  # reflect padding 9 at 1/4 resolution needs >= 10 px there


@dataclass(frozen=True)
class LKDConfig:
    """Blocks per stage; widths and MLP ratio are the same in every released variant."""

    depths: tuple[int, int, int, int, int]
    embed_dims: tuple[int, int, int, int, int] = (24, 48, 96, 48, 24)
    mlp_ratio: int = 4


LKD_VARIANTS: dict[str, LKDConfig] = {
    "lkd_t": LKDConfig(depths=(1, 1, 2, 1, 1)),
    "lkd_s": LKDConfig(depths=(2, 2, 4, 2, 2)),
}


class LayerNormCHW(nn.Module):
    """Per-sample normalisation over (C, H, W) jointly (one group), per-channel affine of shape 1×C×1×1."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        return (x - mean) / std * self.weight + self.bias


class _Mlp(nn.Module):
    """The feed-forward branch: 1×1 to 4C, depthwise 3×3 (zero padding), ReLU, 1×1 back to C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class CEFN(nn.Module):
    """Channel-enhanced feed-forward network: ``LayerNormCHW(mlp(u)) · scaler·σ(ca(GAP(u)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.scaler = nn.Parameter(torch.ones(dim, 1, 1))
        self.mlp = _Mlp(dim, hidden)
        self.norm = LayerNormCHW(dim)
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim // 8, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // 8, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mlp(u)) * (self.scaler * self.ca(u))


class LKDBlock(nn.Module):
    """One LKD block: the decomposed large-kernel half, then the CEFN half, each with a residual."""

    def __init__(self, dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.Linear1 = nn.Conv2d(dim, dim, 1)
        self.DWConv = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, padding_mode="reflect")
        self.DWDConv = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim, padding_mode="reflect")
        self.Linear2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.cemlp = CEFN(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Linear2(self.DWDConv(self.DWConv(self.Linear1(self.norm1(x))))) + x
        return self.cemlp(self.norm2(x)) + x


class _Stage(nn.Module):
    def __init__(self, dim: int, depth: int, mlp_ratio: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(LKDBlock(dim, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Proj(nn.Module):
    """A conv under the attribute ``proj`` (the released key layout of the embed/merge layers)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.proj = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _ProjShuffle(nn.Module):
    """A conv then PixelShuffle, under ``proj.0`` / ``proj.1``."""

    def __init__(self, conv: nn.Conv2d, scale: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(conv, nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LKDNet(nn.Module):
    """The released ``Dehaze`` network: [-1, 1] RGB in, raw (unclamped) [-1, 1] RGB out, same size.

    Args:
        cfg: Stage depths (see :data:`LKD_VARIANTS`).
    """

    def __init__(self, cfg: LKDConfig) -> None:
        super().__init__()
        d, r = cfg.embed_dims, cfg.mlp_ratio
        self.patch_embed = _Proj(nn.Conv2d(3, d[0], 3, padding=1, padding_mode="reflect"))
        self.layer1 = _Stage(d[0], cfg.depths[0], r)
        self.patch_merge1 = _Proj(nn.Conv2d(d[0], d[1], 2, stride=2))
        self.skip1 = nn.Conv2d(d[0], d[0], 1)
        self.layer2 = _Stage(d[1], cfg.depths[1], r)
        self.patch_merge2 = _Proj(nn.Conv2d(d[1], d[2], 2, stride=2))
        self.skip2 = nn.Conv2d(d[1], d[1], 1)
        self.layer3 = _Stage(d[2], cfg.depths[2], r)
        self.patch_split1 = _ProjShuffle(nn.Conv2d(d[2], d[3] * 4, 1), 2)
        self.fusion1 = MFM(d[3])
        self.layer4 = _Stage(d[3], cfg.depths[3], r)
        self.patch_split2 = _ProjShuffle(nn.Conv2d(d[3], d[4] * 4, 1), 2)
        self.fusion2 = MFM(d[4])
        self.layer5 = _Stage(d[4], cfg.depths[4], r)
        self.patch_unembed = _ProjShuffle(nn.Conv2d(d[4], 4, 3, padding=1, padding_mode="reflect"), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = F.pad(
            x,
            [0, (PAD_MULTIPLE - w % PAD_MULTIPLE) % PAD_MULTIPLE, 0, (PAD_MULTIPLE - h % PAD_MULTIPLE) % PAD_MULTIPLE],
            mode="reflect",
        )
        s1 = self.layer1(self.patch_embed(xp))
        s2 = self.layer2(self.patch_merge1(s1))
        f = self.patch_split1(self.layer3(self.patch_merge2(s2)))
        f = self.fusion1([f, self.skip2(s2)]) + f
        f = self.patch_split2(self.layer4(f))
        f = self.fusion2([f, self.skip1(s1)]) + f
        feat = self.patch_unembed(self.layer5(f))
        k, b = feat[:, :1], feat[:, 1:]
        return (k * xp - b + xp)[:, :, :h, :w]


def load_lkd(path: str | Path, variant: str | None = None) -> LKDNet:
    """Builds an LKD-Net and loads a released checkpoint strictly (the ``module.`` prefix is removed).

    Args:
        path: A released ``.pth`` (a bare state dict) or a state dict saved without the prefix.
        variant: ``lkd_t`` or ``lkd_s``; ``None`` infers it from the number of blocks in ``layer3``.

    Returns:
        The network in eval mode.

    Raises:
        ValueError: Unknown variant, or keys/shapes that do not match (strict loading).
    """
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = OrderedDict((k.removeprefix("module."), v) for k, v in raw.items())
    if variant is None:
        blocks = {k.split(".")[2] for k in state if k.startswith("layer3.blocks.")}
        variant = {2: "lkd_t", 4: "lkd_s"}.get(len(blocks), "")
    if variant not in LKD_VARIANTS:
        raise ValueError(f"unknown LKD-Net variant {variant!r}; choices: {', '.join(LKD_VARIANTS)}")
    net = LKDNet(LKD_VARIANTS[variant])
    net.load_state_dict(state, strict=True)
    return net.eval()


class LKDTeacher(nn.Module):
    """LKD-Net behind the project's image contract: RGB in [0, 1], any N×3×H×W, dehazed RGB in [0, 1] out.

    Inputs smaller than 37 px on a side are reflect-padded (replicated when too small to reflect) and cropped
    back; the output is clamped to [0, 1] as the authors' test script does.

    Args:
        net: A loaded :class:`LKDNet`.
        name: What the teacher is called in logs and reports (e.g. ``lkd-s-ots``).
    """

    def __init__(self, net: LKDNet, name: str = "lkd") -> None:
        super().__init__()
        self.net = net.eval()
        self.name = name

    @classmethod
    def from_file(cls, path: str | Path) -> LKDTeacher:
        """Loads a released checkpoint; the teacher is named after the file's stem."""
        return cls(load_lkd(path), Path(path).stem)

    @torch.inference_mode()
    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        h, w = image01.shape[-2:]
        x = image01 * 2.0 - 1.0
        pad_h, pad_w = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, [0, pad_w, 0, pad_h], mode=mode)
        return (self.net(x)[:, :, :h, :w].clamp(-1.0, 1.0) * 0.5 + 0.5).contiguous()
