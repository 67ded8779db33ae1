"""Configurations of the DCMPNet networks: the paper-size layout and our smaller variants.

DCMPNet (Zhang et al., "Depth Information Assisted Collaborative Mutual Promotion Network for Single Image
Dehazing", CVPR 2024, https://github.com/zhoushen1/DCMPNet) has two networks: the dehazing network Φ
(:class:`model.dcmpnet.DCMPNet`) and the depth network Ψ (:class:`model.depthnet.DepthNet`).

The dataclass defaults are the authors' released layout (``DIACMPN_dehaze_Indoor``, a DehazeFormer-S backbone);
every builder below states only what differs from them, as timm's builders do.

Variants:
    ``dcmpnet``: the authors' layout, key-compatible with their checkpoint (Φ 17,358,337 and Ψ 1,980,283
        parameters). Φ computes the hazy image's depth with its own private depth net ``dpn``, as their code does.
    ``dcmpnet_small``: the default for training and serving on a CPU, about a tenth of the paper's cost for the
        whole inference pipeline (Ψ + Φ). Φ takes Ψ's depth of the hazy image, which is what the paper describes.
    ``dcmpnet_t``: the default for serving. Φ's backbone is DehazeFormer-T's (Song et al., TIP 2023) with its
        soft-reconstruction head and the decoder fed from the third LEGM, so a trained DehazeFormer-T loads into it
        (:mod:`model.warm_start`); the U-Net pre-stage, MSAAM and depth DRDB are ``dcmpnet_small``'s sizes, and so is Ψ.
    ``dcmpnet_tiny``: a very small model for tests; every mechanism is kept.
    ``dcmpnet_t_tiny``: ``dcmpnet_tiny`` with ``dcmpnet_t``'s head and decoder options, for tests of the warm start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "DEFAULT_VARIANT",
    "VARIANTS",
    "DepthConvention",
    "PhiConfig",
    "PsiConfig",
    "Variant",
    "get_variant",
]

DepthConvention = Literal["depth", "disparity"]


@dataclass(frozen=True)
class PsiConfig:
    """The depth network Ψ (``DepthNet.DN`` of the authors).

    Attributes:
        widths: Channels of the four stride-2 encoder stages (the decoder mirrors them).
        growth: Growth rate of every DRDB in Ψ.
        layers: Dilated conv layers per DRDB.
    """

    widths: tuple[int, int, int, int] = (24, 48, 96, 128)
    growth: int = 32
    layers: int = 5

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"PsiConfig.widths must be 4 positive ints, got {self.widths}")
        if self.growth < 1 or self.layers < 1:
            raise ValueError(f"PsiConfig growth and layers must be >= 1, got {self.growth}, {self.layers}")


@dataclass(frozen=True)
class PhiConfig:
    """The dehazing network Φ (``DIACMPN`` of the authors).

    Attributes:
        embed_dims: Widths of the five LEGM stages (encoder H, H/2, H/4; decoder H/2, H). Stage 4 must equal
            stage 2 and stage 5 stage 1 (skip connections and MFM fuse them).
        mlp_ratios: MLP expansion of each stage.
        depths: Transformer blocks per stage.
        num_heads: Attention heads per stage (must divide the width).
        attn_ratios: Fraction of each stage's blocks, counted from the end, that use window attention.
        window_size: Attention window (the shift of odd blocks is half of it).
        unet_base: Width of the first level of the U-Net pre-stage (64 in the paper).
        fusion_hidden: Hidden width of MSAAM's scalar-weight MLP (128 in the paper).
        depth_growth: Growth of the 1-channel DRDB that refines the hazy image's depth.
        depth_layers: Dilated conv layers of that DRDB.
        internal_depth: Φ computes the hazy image's depth with its own depth net ``dpn`` (the authors' code).
            When False Φ takes the depth as an argument (Ψ's estimate of the hazy image, as the paper says).
        internal_depth_net: Layout of ``dpn``; used only when ``internal_depth`` is True.
        legacy_modules: Keep the authors' unused modules (``conv11``, ``conv22``, ``conv_fu``, ``ccc``) and the
            dead ``fuse_conv1`` head so their checkpoint loads with ``strict=True``. They are never computed.
        soft_reconstruction: DehazeFormer's head: ``patch_unembed`` predicts 4 channels ``K, B`` and the output is
            ``K·x − B + x``. False: the released DCMPNet head, 3 channels added to ``x``.
        decoder_from_legm3: The decoder starts from the third LEGM's output (the paper's §3.2.2 and DehazeFormer).
            False: from ``patch_merge2``'s output, ``legm3`` reaching the decoder only through MSAAM (as released).
    """

    embed_dims: tuple[int, ...] = (24, 48, 96, 48, 24)
    mlp_ratios: tuple[float, ...] = (2.0, 4.0, 4.0, 2.0, 2.0)
    depths: tuple[int, ...] = (8, 8, 8, 4, 4)
    num_heads: tuple[int, ...] = (2, 4, 6, 1, 1)
    attn_ratios: tuple[float, ...] = (1 / 4, 1 / 2, 3 / 4, 0.0, 0.0)
    window_size: int = 8
    unet_base: int = 64
    fusion_hidden: int = 128
    depth_growth: int = 32
    depth_layers: int = 5
    internal_depth: bool = True
    internal_depth_net: PsiConfig = field(default_factory=PsiConfig)
    legacy_modules: bool = True
    soft_reconstruction: bool = False
    decoder_from_legm3: bool = False

    def __post_init__(self) -> None:
        per_stage = (self.embed_dims, self.mlp_ratios, self.depths, self.num_heads, self.attn_ratios)
        if any(len(v) != 5 for v in per_stage):
            raise ValueError(f"PhiConfig needs 5 values per stage, got {per_stage}")
        dims = self.embed_dims
        if dims[3] != dims[1] or dims[4] != dims[0]:
            raise ValueError(f"embed_dims[3] must equal embed_dims[1] and [4] equal [0], got {dims}")
        for dim, heads in zip(dims, self.num_heads, strict=True):
            if heads < 1 or dim % heads:
                raise ValueError(f"num_heads {self.num_heads} must divide embed_dims {dims}")
        if min(self.depths) < 1 or any(not 0.0 <= r <= 1.0 for r in self.attn_ratios):
            raise ValueError(f"depths must be >= 1 and attn_ratios in [0, 1], got {self.depths}, {self.attn_ratios}")
        if self.window_size < 2 or min(self.unet_base, self.fusion_hidden, self.depth_growth, self.depth_layers) < 1:
            raise ValueError("window_size must be >= 2 and unet_base, fusion_hidden, depth_growth/layers >= 1")


@dataclass(frozen=True)
class Variant:
    """A named pair of network configurations.

    Attributes:
        name: Registry name.
        phi: Φ's configuration.
        psi: Ψ's configuration.
        depth_convention: What Ψ's weights predict by default: "depth" (our training: 0 near, larger far) or
            "disparity" (the authors' RA-Depth targets: large near). A checkpoint's own field overrides it.
    """

    name: str
    phi: PhiConfig
    psi: PsiConfig
    depth_convention: DepthConvention = "depth"


def _dcmpnet() -> Variant:
    return Variant("dcmpnet", PhiConfig(), PsiConfig(), depth_convention="disparity")


def _ours(name: str, phi: PhiConfig, psi: PsiConfig) -> Variant:
    """Our variants: Ψ's depth goes into Φ (no private ``dpn``), no legacy modules."""
    return Variant(name, replace(phi, internal_depth=False, legacy_modules=False), psi)


def _dcmpnet_small() -> Variant:
    phi = PhiConfig(
        embed_dims=(16, 32, 64, 32, 16),
        depths=(2, 2, 4, 1, 1),
        num_heads=(2, 4, 4, 1, 1),
        attn_ratios=(1 / 2, 1 / 2, 1 / 2, 0.0, 0.0),
        unet_base=16,
        fusion_hidden=32,
        depth_growth=8,
    )
    return _ours("dcmpnet_small", phi, PsiConfig(widths=(8, 16, 32, 48), growth=8))


def _dcmpnet_t() -> Variant:
    phi = PhiConfig(
        depths=(4, 4, 4, 2, 2),
        attn_ratios=(0.0, 1 / 2, 1.0, 0.0, 0.0),
        unet_base=16,
        fusion_hidden=32,
        depth_growth=8,
        soft_reconstruction=True,
        decoder_from_legm3=True,
    )
    return _ours("dcmpnet_t", phi, _dcmpnet_small().psi)


def _dcmpnet_tiny() -> Variant:
    phi = PhiConfig(
        embed_dims=(4, 8, 8, 8, 4),
        mlp_ratios=(2.0, 2.0, 2.0, 2.0, 2.0),
        depths=(1, 1, 2, 1, 1),
        num_heads=(1, 2, 2, 1, 1),
        attn_ratios=(1.0, 0.0, 1 / 2, 0.0, 0.0),
        window_size=4,
        unet_base=2,
        fusion_hidden=8,
        depth_growth=2,
        depth_layers=3,
    )
    return _ours("dcmpnet_tiny", phi, PsiConfig(widths=(4, 4, 8, 8), growth=2, layers=3))


def _dcmpnet_t_tiny() -> Variant:
    tiny = _dcmpnet_tiny()
    return replace(
        tiny, name="dcmpnet_t_tiny", phi=replace(tiny.phi, soft_reconstruction=True, decoder_from_legm3=True)
    )


VARIANTS: dict[str, Callable[[], Variant]] = {
    "dcmpnet": _dcmpnet,
    "dcmpnet_small": _dcmpnet_small,
    "dcmpnet_t": _dcmpnet_t,
    "dcmpnet_tiny": _dcmpnet_tiny,
    "dcmpnet_t_tiny": _dcmpnet_t_tiny,
}

DEFAULT_VARIANT = "dcmpnet_t"


def get_variant(name: str) -> Variant:
    """The variant registered under ``name``.

    Raises:
        ValueError: Unknown name; the message lists the choices.
    """
    try:
        builder = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choices: {', '.join(sorted(VARIANTS))}") from None
    return builder()
