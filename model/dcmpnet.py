"""The dehazing network Φ of DCMPNet.

Paper: Zhang et al., "Depth Information Assisted Collaborative Mutual Promotion Network for Single Image
Dehazing", CVPR 2024. Code: https://github.com/zhoushen1/DCMPNet (``DIACMPN``). Its layout, key names and shapes
are summarised in docs/model.md ("DCMPNet", "The authors' checkpoint") and checked against a listing of the released
state dict (``tests/model/golden/dcmpnet_state_dict.json``); this file rebuilds that network (our own code) so that
the authors' checkpoint loads into the ``dcmpnet`` variant and gives their outputs.

The backbone is DehazeFormer-S (Song et al., TIP 2023) under the paper's names: :class:`RLN` (rescaled layer norm),
:class:`WindowAttention`, :class:`LEGM` (a stack of transformer blocks), :class:`MFM` (SK-style fusion of a skip),
:class:`PatchEmbed` / :class:`PatchUnEmbed`. Around it: a U-Net pre-stage (:mod:`model.unet`), the hazy image's
depth refined by a 1-channel DRDB into the first LEGM, and :class:`MSAAM`, the multi-scale fusion head.

Deliberate differences from the released code, none of which changes an output:
    * Batch sizes are never turned into Python ints (their ``window_reverse`` does, which freezes the batch size
      of a traced model); shapes use ``-1`` and ``unflatten``.
    * Instance norm is written out (mean/var over H, W) instead of ``nn.InstanceNorm2d(24)`` applied to 48/96
      channels, which only warned in their code and emits tracer warnings.
    * ``fuse_conv1``'s output was computed and discarded; it is not computed here (its parameters are kept).
    * Served weights whose fusions weigh an added input (U-Net, depth, MSAAM) by exactly zero skip computing it
      (:meth:`DCMPNet.prune_unused_inputs`); the output is the same.
    * MSAAM's layers live in ``self.msaam``; the authors' keys are ``ca.*`` / ``fuse_conv*.*`` at the top level.
      :mod:`model.checkpoint` maps the names (``OFFICIAL_RENAMES``).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from model.depthnet import DepthNet
from model.drdb import DRDB
from model.layout import cat_channels, keep_channels_last
from model.unet import UNet
from model.variants import PhiConfig

__all__ = [
    "LEGM",
    "MFM",
    "MSAAM",
    "RLN",
    "Attention",
    "DCMPNet",
    "InstanceNorm",
    "Mlp",
    "PatchEmbed",
    "PatchUnEmbed",
    "TransformerBlock",
    "WindowAttention",
]

PAD_MULTIPLE = 4  # two stride-2 stages


class RLN(nn.Module):
    """Rescaled layer norm: per-sample mean/std over (C, H, W), per-channel affine.

    Also returns ``rescale = meta1(std)`` and ``rebias = meta2(mean)``, which the block applies to the
    attention branch's output so that the normalisation does not discard the input's statistics.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.meta1 = nn.Conv2d(1, dim, 1)
        self.meta2 = nn.Conv2d(1, dim, 1)
        nn.init.trunc_normal_(self.meta1.weight, std=0.02)
        nn.init.ones_(cast(torch.Tensor, self.meta1.bias))
        nn.init.trunc_normal_(self.meta2.weight, std=0.02)
        nn.init.zeros_(cast(torch.Tensor, self.meta2.bias))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        out = (x - mean) / std * self.weight + self.bias
        return out, self.meta1(std), self.meta2(mean)


def _init_conv(conv: nn.Conv2d, network_depth: int, gain_scaled: bool = True) -> None:
    """DehazeFormer's init: truncated normal with Xavier std, scaled by (8·depth)^-1/4 except for QK."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
    gain = (8 * network_depth) ** (-1 / 4) if gain_scaled else 1.0
    nn.init.trunc_normal_(conv.weight, std=gain * math.sqrt(2.0 / float(fan_in + fan_out)))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class Mlp(nn.Module):
    """Per-pixel MLP: 1×1 conv, ReLU, 1×1 conv."""

    def __init__(self, network_depth: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 1))
        for m in self.mlp:
            if isinstance(m, nn.Conv2d):
                _init_conv(m, network_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def relative_positions_log(window_size: int) -> torch.Tensor:
    """Log-spaced relative offsets ``sign(d)·log(1+|d|)`` between the tokens of a window, N×N×2 (N = ws²)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).float()
    return torch.sign(rel) * torch.log1p(rel.abs())


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a relative-position bias from an MLP (no mask).

    Args:
        dim: Channels of V (Q and K have the same).
        window_size: Side of the square window.
        num_heads: Heads.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.tokens = window_size * window_size
        self.scale = (dim // num_heads) ** -0.5
        self.register_buffer("relative_positions", relative_positions_log(window_size))
        self.meta = nn.Sequential(nn.Linear(2, 256), nn.ReLU(inplace=True), nn.Linear(256, num_heads))

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention over windows; ``qkv`` is (windows·N)×tokens×3C, returns windows×tokens×C.

        ``softmax(q·kᵀ·scale + bias)·v`` through ``scaled_dot_product_attention`` with the bias as an additive mask:
        a fused kernel (CPU and CUDA) that never holds every window's tokens×tokens matrix at once. Written out, two
        copies of that matrix were most of the peak memory of a full-resolution stage (tests/benchmarks).
        """
        qkv = qkv.reshape(-1, self.tokens, 3, self.num_heads, self.dim // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.meta(self.relative_positions).permute(2, 0, 1).unsqueeze(0).to(qkv.dtype)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias, scale=self.scale)
        return out.transpose(1, 2).reshape(-1, self.tokens, self.dim)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """N×H×W×C (H, W multiples of ws) -> (N·windows)×ws²×C."""
    _, h, w, c = x.shape
    x = x.reshape(-1, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`; the batch size is inferred (-1), so it stays dynamic in a trace."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class Attention(nn.Module):
    """The token mixer of a block: ``proj(DWConv(V) + WindowAttn(QK‖V))``, or ``proj(DWConv(V))`` without attention.

    Shifted windows are made by reflect-padding the QKV map by ``shift`` on the top/left (and the rest of a
    window on the bottom/right), then cropping, as in the released code; there is no roll and no mask.
    """

    def __init__(
        self, network_depth: int, dim: int, num_heads: int, window_size: int, shift_size: int, use_attn: bool
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim, padding_mode="reflect")
        self.V = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.QK: nn.Conv2d | None = nn.Conv2d(dim, dim * 2, 1) if use_attn else None
        self.attn: WindowAttention | None = WindowAttention(dim, window_size, num_heads) if use_attn else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv(m, network_depth, gain_scaled=m is not self.QK)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        ws, s = self.window_size, self.shift_size
        h, w = x.shape[-2:]
        mod_h = (ws - h % ws) % ws
        mod_w = (ws - w % ws) % ws
        if s > 0:
            return F.pad(x, [s, (ws - s + mod_w) % ws, s, (ws - s + mod_h) % ws], mode="reflect")
        return F.pad(x, [0, mod_w, 0, mod_h], mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.V(x)
        out = self.conv(v)
        if self.QK is not None and self.attn is not None:
            h, w = x.shape[-2:]
            qkv = self._pad(cat_channels([self.QK(x), v]))
            hp, wp = qkv.shape[-2:]
            windows = self.attn(window_partition(qkv.permute(0, 2, 3, 1), self.window_size))
            shifted = window_reverse(windows, self.window_size, hp, wp)
            s = self.shift_size
            out = out + shifted[:, s : s + h, s : s + w, :].permute(0, 3, 1, 2)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """``x + Attn(RLN(x))·rescale + rebias``, then ``x + MLP(x)``. Blocks without attention have no norm."""

    def __init__(
        self,
        network_depth: int,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        shift_size: int,
        use_attn: bool,
    ) -> None:
        super().__init__()
        self.norm1: RLN | None = RLN(dim) if use_attn else None
        self.attn = Attention(network_depth, dim, num_heads, window_size, shift_size, use_attn)
        self.mlp = Mlp(network_depth, dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm1 is not None:
            y, rescale, rebias = self.norm1(x)
            x = x + self.attn(y) * rescale + rebias
        else:
            x = x + self.attn(x)
        return x + self.mlp(x)


class LEGM(nn.Module):
    """Local-enhanced global modelling: a stack of transformer blocks at one scale (DehazeFormer's BasicLayer).

    Window attention is used in the last ``floor(attn_ratio·depth)`` blocks; odd-indexed blocks shift their
    windows by half a window.
    """

    def __init__(
        self,
        network_depth: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        attn_ratio: float,
    ) -> None:
        super().__init__()
        first_attn = depth - int(attn_ratio * depth)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                network_depth,
                dim,
                num_heads,
                mlp_ratio,
                window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                use_attn=i >= first_attn,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PatchEmbed(nn.Module):
    """Conv with kernel k, stride p, padding (k-p+1)//2 in reflect mode (patch merging for p = 2)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size or patch_size
        self.proj = nn.Conv2d(
            in_chans, embed_dim, k, stride=patch_size, padding=(k - patch_size + 1) // 2, padding_mode="reflect"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PatchUnEmbed(nn.Module):
    """Conv to ``out·p²`` channels (reflect padding), then PixelShuffle(p)."""

    def __init__(self, patch_size: int, out_chans: int, embed_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(
                embed_dim,
                out_chans * patch_size**2,
                kernel_size,
                padding=kernel_size // 2,
                padding_mode="reflect",
            ),
            nn.PixelShuffle(patch_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MFM(nn.Module):
    """Mixed fusion module (DehazeFormer's SKFusion): per-channel softmax weights over the two inputs.

    The inputs are summed, pooled, passed through ``1×1 (C -> max(C/8, 4)) -> ReLU -> 1×1 (-> 2C)`` (no biases),
    and the softmax over the two branches weights their sum. The caller adds its own input again.
    """

    def __init__(self, dim: int, height: int = 2, reduction: int = 8) -> None:
        super().__init__()
        self.height = height
        hidden = max(int(dim / reduction), 4)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim * height, 1, bias=False)
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(feats, dim=1)
        attn = self.mlp(stacked.sum(dim=1).mean(dim=(2, 3), keepdim=True))
        attn = torch.softmax(attn.unflatten(1, (self.height, -1)), dim=1)
        return keep_channels_last((stacked * attn).sum(dim=1), feats)


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters (biased variance, eps 1e-5), written out so tracing is silent."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


def _fuse_head(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, padding), InstanceNorm(), nn.ReLU(inplace=True))


class MSAAM(nn.Module):
    """Multi-scale attention aggregation: fuses the three encoder outputs for the two decoder stages.

    GAP of the three LEGM outputs -> 1×1 -> ReLU -> 1×1 -> three unbounded per-sample scalars; each output is
    scaled by its scalar, nearest-upsampled to full resolution and concatenated; ``fuse_conv2`` (3×3 s2) and
    ``fuse_conv3`` (5×5 s4) bring the concatenation back to H/2 and H/4 (conv + instance norm + ReLU).

    Args:
        dims: Widths of the encoder stages (H, H/2, H/4).
        hidden: Width of the scalar-weight MLP.
        legacy: Also create ``fuse_conv1`` (3×3 s1 to ``dims[0]``), whose output the authors discard; it is never
            computed here.
    """

    def __init__(self, dims: tuple[int, int, int], hidden: int, legacy: bool = False) -> None:
        super().__init__()
        total = sum(dims)
        self._offsets = (0, dims[0], dims[0] + dims[1], total)  # channel ranges of x1, x2, x3 in the fused input
        self.ca = nn.Sequential(nn.Conv2d(total, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 3, 1))
        self.fuse_conv1: nn.Sequential | None = _fuse_head(total, dims[0], 3, 1, 1) if legacy else None
        self.fuse_conv2 = _fuse_head(total, dims[1], 3, 2, 1)
        self.fuse_conv3 = _fuse_head(total, dims[2], 5, 4, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the fused features at H/2 and H/4 (H a multiple of 4).

        The full-resolution concatenation is never built: a convolution over concatenated channels is the sum of
        convolutions of each part with its slice of the weights, so each scaled, upsampled input is convolved by
        both heads and dropped in turn. Built at once, that concatenation and its inputs were the largest tensors
        of the whole pipeline and set its peak memory (tests/benchmarks/bench_memory.py).
        """
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True) for x in (x1, x2, x3)], dim=1)
        w = self.ca(pooled)
        heads = (cast(nn.Conv2d, self.fuse_conv2[0]), cast(nn.Conv2d, self.fuse_conv3[0]))
        sums: list[torch.Tensor] = []
        for index, (x, scale) in enumerate(((x1, 1), (x2, 2), (x3, 4))):
            part = x * w[:, index : index + 1]
            if scale > 1:
                part = F.interpolate(part, scale_factor=float(scale), mode="nearest")
            channels = slice(self._offsets[index], self._offsets[index + 1])
            bias = index == 0  # each head's bias is added once
            outs = [conv._conv_forward(part, conv.weight[:, channels], conv.bias if bias else None) for conv in heads]
            sums = outs if index == 0 else [total + out for total, out in zip(sums, outs, strict=True)]
        return self.fuse_conv2[1:](sums[0]), self.fuse_conv3[1:](sums[1])


def _conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1)


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Reflect-pads bottom/right to a multiple; the arithmetic stays symbolic under tracing."""
    h, w = x.shape[-2:]
    return F.pad(x, [0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple], mode="reflect")


class DCMPNet(nn.Module):
    """Φ: hazy image in [0, 1] (and its depth) -> dehazed image in [0, 1] scale.

    Inputs are mapped to [-1, 1] inside, reflect-padded to a multiple of 4 and the output is cropped back;
    the output is ``0.5·(x + head(x)) + 0.5`` (or DehazeFormer's ``K·x − B + x`` in place of ``x + head(x)``, see
    ``PhiConfig.soft_reconstruction``), not clamped. Inputs need at least ``4·window_size`` (and 32) px
    per side (the reflect padding of the H/4 windows); :class:`model.pipeline.DehazePipeline` pads smaller ones.

    Args:
        cfg: The configuration; see :class:`model.variants.PhiConfig`.
    """

    def __init__(self, cfg: PhiConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or PhiConfig()
        self.cfg = cfg
        d = cfg.embed_dims
        net_depth = sum(cfg.depths)
        self.patch_embed = PatchEmbed(1, 3, d[0], kernel_size=3)

        def legm(i: int) -> LEGM:
            return LEGM(
                net_depth, d[i], cfg.depths[i], cfg.num_heads[i], cfg.mlp_ratios[i], cfg.window_size, cfg.attn_ratios[i]
            )

        self.legm1, self.legm2, self.legm3, self.legm4, self.legm5 = (legm(i) for i in range(5))
        self.patch_merge1 = PatchEmbed(2, d[0], d[1])
        self.skip1 = _conv1x1(d[0], d[0])
        self.patch_merge2 = PatchEmbed(2, d[1], d[2])
        self.skip2 = _conv1x1(d[1], d[1])
        self.patch_split1 = PatchUnEmbed(2, d[3], d[2])
        self.mfm1 = MFM(d[3])
        self.patch_split2 = PatchUnEmbed(2, d[4], d[3])
        self.mfm2 = MFM(d[4])
        self.patch_unembed = PatchUnEmbed(1, 4 if cfg.soft_reconstruction else 3, d[4], kernel_size=3)
        self.conv1 = _conv1x1(2 * d[0] + 1, d[0])
        self.conv2 = _conv1x1(2 * d[1], d[1])
        self.conv3 = _conv1x1(2 * d[2], d[2])
        self.conv4 = _conv1x1(2 * d[3], d[3])
        self.conv5 = _conv1x1(2 * d[4], d[4])
        self.Unet1 = UNet(cfg.unet_base)
        self.d3_conv = _conv1x1(3, d[0])
        self.d2_conv = _conv1x1(cfg.unet_base, d[1])
        self.d1_conv = _conv1x1(2 * cfg.unet_base, d[2])
        self.msaam = MSAAM((d[0], d[1], d[2]), cfg.fusion_hidden, legacy=cfg.legacy_modules)
        self.conv_d1 = _conv1x1(2 * d[2], d[2])
        self.conv_d2 = _conv1x1(2 * d[3], d[3])
        self.drdb = DRDB(1, cfg.depth_growth, cfg.depth_layers)
        self.pruned: frozenset[str] = frozenset()  # added inputs left uncomputed (see prune_unused_inputs)
        self.dpn: DepthNet | None = DepthNet(cfg.internal_depth_net) if cfg.internal_depth else None
        if cfg.legacy_modules:  # created but never called by the authors; kept for a strict checkpoint load
            self.conv11 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
            self.conv22 = nn.Conv2d(1, 1, 3, stride=4, padding=1)
            self.conv_fu = _conv1x1(d[0] + 1, d[0])
            self.ccc = nn.Conv2d(4, 3, 3, padding=1)

    def _added_slices(self) -> dict[str, list[tuple[nn.Conv2d, slice]]]:
        """Each added input and the fusion-weight slices that read it (the order of each concatenation below)."""
        d = self.cfg.embed_dims
        return {
            "unet": [
                (self.conv1, slice(d[0], 2 * d[0])),
                (self.conv2, slice(d[1], 2 * d[1])),
                (self.conv3, slice(d[2], 2 * d[2])),
                (self.conv4, slice(d[3], 2 * d[3])),
                (self.conv5, slice(d[4], 2 * d[4])),
            ],
            "depth": [(self.conv1, slice(2 * d[0], 2 * d[0] + 1))],
            "msaam": [(self.conv_d1, slice(0, d[2])), (self.conv_d2, slice(0, d[3]))],
        }

    @torch.no_grad()
    def prune_unused_inputs(self) -> frozenset[str]:
        """Stops computing the added inputs (``unet``, ``depth``, ``msaam``) that every fusion weighs by exactly zero.

        A Φ warm-started from a DehazeFormer (:mod:`model.warm_start`) whose fusions still pass the backbone through
        ignores its U-Net, depth DRDB and MSAAM, which are 40 % of its MACs; pruned, the same output (bit for bit up
        to float summation order) costs that much less. For inference only (the loaders of served weights call it):
        a pruned input gets no gradient, so training would never start using it. The decision is read once, here,
        so that a trace records the pruned graph without data-dependent branches.

        Returns:
            The pruned inputs (also kept in :attr:`pruned`).
        """
        self.pruned = frozenset(
            name
            for name, uses in self._added_slices().items()
            if all(not conv.weight[:, part].any() for conv, part in uses)
        )
        return self.pruned

    @staticmethod
    def _fuse(conv: nn.Conv2d, parts: list[torch.Tensor | int]) -> torch.Tensor:
        """A 1×1 fusion over the concatenation of ``parts``; an int part is a pruned input of that many channels,
        whose weights are zero, so it is left out of the concatenation and of the weight."""
        if all(isinstance(p, torch.Tensor) for p in parts):
            return conv(cat_channels(cast(list[torch.Tensor], parts)))
        tensors, columns, start = [], [], 0
        for part in parts:
            width = part if isinstance(part, int) else part.shape[1]
            if isinstance(part, torch.Tensor):
                tensors.append(part)
                columns.append(conv.weight[:, start : start + width])
            start += width
        return conv._conv_forward(cat_channels(tensors), torch.cat(columns, dim=1), conv.bias)

    @property
    def min_size(self) -> int:
        """Smallest input side Φ accepts."""
        return max(32, 4 * self.cfg.window_size)

    def unet_features(self, image01: torch.Tensor) -> list[torch.Tensor]:
        """Φ's own U-Net pre-stage features of any image (Eq. 5), at the size padded to a multiple of 4.

        Returns:
            ``[d1, d2, d3]``: the U-Net outputs projected to the encoder widths (H/4, H/2, H), as the authors'
            forward returns them.
        """
        return self._unet(pad_to_multiple(image01 * 2.0 - 1.0))

    def _unet(self, x: torch.Tensor) -> list[torch.Tensor]:
        d1, d2, d3 = self.Unet1(x)
        return [self.d1_conv(d1), self.d2_conv(d2), self.d3_conv(d3)]

    def _hazy_depth(self, x: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        """The hazy image's depth at the padded size: Φ's own ``dpn`` or the given map, padded alike."""
        if self.dpn is not None:
            return self.dpn.forward_signed(x)
        if depth is None:
            raise ValueError("this variant of Φ needs the depth of the hazy image (Ψ's estimate) as `depth`")
        return pad_to_multiple(depth)

    def _check(self, hazy: torch.Tensor, depth: torch.Tensor | None) -> None:
        if torch.jit.is_tracing():
            return
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N×3×H×W image, got {tuple(hazy.shape)}")
        if min(hazy.shape[-2:]) < self.min_size:
            raise ValueError(f"Φ needs at least {self.min_size} px per side, got {tuple(hazy.shape[-2:])}")
        if depth is not None and self.dpn is None:
            n, _, h, w = hazy.shape
            if tuple(depth.shape) != (n, 1, h, w):
                raise ValueError(f"depth must be {(n, 1, h, w)}, got {tuple(depth.shape)}")

    def forward(self, hazy01: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Dehazed N×3×H×W in [0, 1] scale (not clamped).

        Args:
            hazy01: Hazy images in [0, 1].
            depth: Ψ's raw depth of ``hazy01``, N×1×H×W; ignored when the variant has an internal depth net.
        """
        return self.forward_with_features(hazy01, depth)[0]

    def forward_with_features(
        self, hazy01: torch.Tensor, depth: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Like :meth:`forward`, also returning the U-Net features of the hazy image (see :meth:`unet_features`)."""
        self._check(hazy01, depth)
        h, w = hazy01.shape[-2:]
        dims = self.cfg.embed_dims
        x1 = pad_to_multiple(hazy01 * 2.0 - 1.0)
        feats = [] if "unet" in self.pruned else self._unet(x1)
        d1, d2, d3 = feats if feats else (dims[2], dims[1], dims[0])  # widths stand for pruned inputs
        dep = 1 if "depth" in self.pruned else self.drdb(self._hazy_depth(x1, depth))

        x_dn1 = self.legm1(self._fuse(self.conv1, [self.patch_embed(x1), d3, dep]))
        x_dn2 = self.legm2(self._fuse(self.conv2, [self.patch_merge1(x_dn1), d2]))
        x = self.patch_merge2(x_dn2)
        x_dn3 = self.legm3(self._fuse(self.conv3, [x, d1]))
        fuse2, fuse3 = (dims[3], dims[2]) if "msaam" in self.pruned else self.msaam(x_dn1, x_dn2, x_dn3)

        # As released, the decoder starts from the patch_merge2 output (legm3 reaches it only through MSAAM);
        # the paper's text and DehazeFormer start it from legm3.
        x = self.patch_split1(self._fuse(self.conv_d1, [fuse3, x_dn3 if self.cfg.decoder_from_legm3 else x]))
        x = self.mfm1([x, self.skip2(x_dn2)]) + x
        x = self.legm4(self._fuse(self.conv4, [x, d2]))
        x = self.patch_split2(self._fuse(self.conv_d2, [fuse2, x]))
        x = self.mfm2([x, self.skip1(x_dn1)]) + x
        x = self.legm5(self._fuse(self.conv5, [x, d3]))
        out = self._reconstruct(self.patch_unembed(x), x1)[:, :, :h, :w]
        return out * 0.5 + 0.5, feats

    def _reconstruct(self, head: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The output in [-1, 1] scale: ``x + head`` (DCMPNet) or ``K·x − B + x`` (DehazeFormer's soft head)."""
        if not self.cfg.soft_reconstruction:
            return head + x
        k, b = head[:, :1], head[:, 1:]
        return k * x - b + x
