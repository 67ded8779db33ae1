"""CORUN, the cooperative unfolding network for real-world dehazing.

Paper: Fang et al., "Real-world Image Dehazing with Coherence-based Pseudo Labeling and Cooperative Unfolding
Network", NeurIPS 2024. Code: https://github.com/cnyvfang/CORUN-Colabator (``corun_colabator/archs/corun_arch.py``).
The facts used here are summarised in docs/model.md ("CORUN, the second model family") and pinned by
the released state dict's listing and golden outputs in ``tests/model/``; this file is our own code, written so that the
authors' checkpoint (``params_ema`` of ``CORUN.pth``) loads into the ``corun`` variant with ``strict=True`` and the
forward pass is their function (``tests/model/test_corun.py`` proves both).

The network unfolds K iterations of an optimisation of the atmospheric scattering model P = J·T + A·(1 − T) with
A = 1, as the released code fixes it. Each :class:`CorunStage` takes the hazy image P and the previous estimates:

    T̂ₖ = TGDM(P, Ĵₖ₋₁, Tₖ₋₁)      closed-form transmission step, learnable step size λ
    Tₖ = T-CPMM(T̂ₖ, Jₖ₋₁)          proximal network on [T̂ₖ, Jₖ₋₁], residual on T̂ₖ (skipped in the last stage)
    Ĵₖ = SGDM(P, Jₖ₋₁, T̂ₖ)        closed-form scene step, learnable step size γ
    Jₖ = S-CPMM(Ĵₖ, T̂ₖ)            proximal network on [Ĵₖ, T̂ₖ], residual on Ĵₖ

from J₀ = Ĵ₀ = P and T₀ = 0.5. Both proximal networks are an :class:`MST`: a 3-level U-shaped transformer whose
:class:`MSMSA` attends across channels (spectral attention, cost linear in H·W), widths 30/60/120/240 in the paper.

Contract of :class:`CORUN`: RGB in [0, 1], any N×3×H×W (H, W >= 1); the input is padded to a multiple of 8 inside
``forward`` (reflect as far as the side allows, replicate beyond) and both outputs are cropped back. It returns
``(dehazed, transmission)``: J_K (N×3×H×W, [0, 1] scale, not clamped, as released; consumers clamp) and T̂_K
(N×1×H×W, in [0.05, 0.999]). Shapes are never turned into Python ints, so ``torch.jit.trace`` gives a graph that
runs at every batch size and image size.

Variants (:data:`CORUN_VARIANTS`; MACs counted by ``FlopCounterMode`` at 1×3×256×256, FLOPs / 2):
    ``corun``: the released layout (K = 4, widths 30/60/120/240), 18,674,262 parameters, 71.48 GMACs; the
        authors' state dict loads into it with ``strict=True``.
    ``corun_small``: the CPU size, K = 3, widths 12/24/48/96, FFN expansion 2: 1,852,424 parameters, 7.19 GMACs
        (a tenth of ``corun``); it keeps all three kinds of stage (first, middle, last).
    ``corun_tiny``: for tests, K = 3, widths 2/4/8/16: 59,184 parameters, 0.30 GMACs.
The registry is separate from DCMPNet's (:mod:`model.variants`, whose variants pair a Φ with a Ψ); both follow the
same pattern: a frozen config, one builder per name stating what differs, ``ValueError`` listing the choices.

Differences from the released code; none changes an output beyond float rounding (the golden test agrees to
< 1e-6) at the sizes the released code accepts:
    * The released network needs H, W divisible by 8 (it fails in ``pixel_unshuffle`` otherwise); ours pads and
      crops. The atmosphere divide ``P / 1.0`` is omitted.
    * :meth:`CORUN.forward` returns ``(J_K, T̂_K)``, the released ``finetune=True`` call's final entries;
      :meth:`CORUN.forward_stages` returns every stage in stage order (the released lists are final stage first).
      The ``debug`` and ``t_mode`` paths (side-by-side maps, a torchvision grayscale) are not rebuilt.
    * The attention and the layer norm work on N×C×H×W directly (the Linear layers applied as matrix products on
      N×C×(H·W), the norm written out over dim 1) instead of permuting to channels-last and back; the initial T₀
      is created on the input's device (``full_like``) rather than baked to the tracing device.
    * Initialisation (trunc-normal 0.02 for the q/k/v/proj matrices, PyTorch defaults for convolutions) is ours;
      loading trained weights makes it irrelevant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CORUN",
    "CORUN_VARIANTS",
    "MSAB",
    "MSMSA",
    "MST",
    "PAD_MULTIPLE",
    "SGDM",
    "STEP_INIT",
    "TGDM",
    "CorunConfig",
    "CorunStage",
    "Downsample",
    "FeedForward",
    "LayerNorm2d",
    "PreNorm",
    "Upsample",
    "create_corun",
    "get_corun_config",
    "pad_to_multiple",
]

LEVELS = 3  # encoder levels of the MST; each halves H and W
PAD_MULTIPLE = 2**LEVELS
STEP_INIT = 1.0 / (1.0 + math.exp(-0.3))  # sigmoid(0.3) ≈ 0.5744, the released initial λ and γ
T_INIT = 0.5  # the constant initial transmission map
T_MIN, T_MAX = 0.05, 0.999  # TGDM's clamp
TINY = 1e-7  # replaces exact zeros in TGDM's divisions


@dataclass(frozen=True)
class CorunConfig:
    """Layout of a CORUN network. The defaults are the released ``CORUN(depth=4)``.

    Attributes:
        stages: K, the unfolded stages (>= 2: the first and the last stage always exist).
        dim: Width of the MST's first level; level l has ``dim·2^l`` channels in ``2^l`` heads of ``dim`` channels.
            Must be even (the downsampling halves it before the pixel unshuffle).
        blocks: MSABs at the three encoder levels and at the bottleneck; the decoder levels mirror the encoder's.
        ffn_mult: Expansion of the feed-forward network inside an MSAB.
        step_init: Initial value of every learnable step size (λ of TGDM, γ of SGDM).
    """

    stages: int = 4
    dim: int = 30
    blocks: tuple[int, int, int, int] = (1, 1, 1, 1)
    ffn_mult: int = 4
    step_init: float = STEP_INIT

    def __post_init__(self) -> None:
        if self.stages < 2:
            raise ValueError(f"CorunConfig.stages must be >= 2, got {self.stages}")
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"CorunConfig.dim must be an even int >= 2, got {self.dim}")
        if len(self.blocks) != LEVELS + 1 or min(self.blocks) < 1:
            raise ValueError(f"CorunConfig.blocks must be {LEVELS + 1} ints >= 1, got {self.blocks}")
        if self.ffn_mult < 1:
            raise ValueError(f"CorunConfig.ffn_mult must be >= 1, got {self.ffn_mult}")


# --- the proximal network (MST) -----------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels of an N×C×H×W tensor (same parameters, no permutes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out: var_mean over dim 1 was ~30x slower on a CPU than these elementwise passes.
        centred = x - x.mean(dim=1, keepdim=True)
        out = centred * torch.rsqrt((centred * centred).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight[:, None, None]
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out


class MSMSA(nn.Module):
    """MS-MSA: multi-head self-attention across channels (spectral attention).

    Per head, queries and keys are L2-normalised over the H·W tokens and the attention is the d×d matrix
    softmax(Kᵀ·Q · rescale) over channels, applied to V; the result goes through a linear projection and is added
    to a positional branch on V (depthwise 3×3, GELU, depthwise 3×3). The cost is linear in H·W.

    Args:
        dim: Channels in and out.
        heads: Heads; ``dim`` must be a multiple of it.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.rescale = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim, dim, bias=True)
        self.pos_emb = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False, groups=dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The Linear layers act on channels: applied as matrix products on N×C×(H·W), q, k and v in one product.
        tokens = x.flatten(2)
        w_qkv = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        q, k, v = torch.matmul(w_qkv, tokens).unflatten(1, (3 * self.heads, -1)).chunk(3, dim=1)  # N×heads×d×HW
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (torch.matmul(k, q.transpose(-2, -1)) * self.rescale).softmax(dim=-1)  # N×heads×d×d
        out = torch.matmul(self.proj.weight, torch.matmul(attn, v).flatten(1, 2)) + self.proj.bias[:, None]
        return out.view_as(x) + self.pos_emb(v.reshape_as(x))


class FeedForward(nn.Module):
    """1×1 conv C -> mult·C, GELU, depthwise 3×3, GELU, 1×1 conv back to C (no biases)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        hidden = dim * mult
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    """``fn(norm(x))`` with a layer norm over channels."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class MSAB(nn.Module):
    """Multi-head spectral attention blocks: ``x + MSMSA(x)`` (no norm in front), then ``x + FFN(LN(x))``.

    Args:
        dim: Channels.
        heads: Attention heads.
        num_blocks: Attention + feed-forward pairs.
        ffn_mult: Expansion of the feed-forward network.
    """

    def __init__(self, dim: int, heads: int, num_blocks: int, ffn_mult: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([MSMSA(dim, heads), PreNorm(dim, FeedForward(dim, ffn_mult))]) for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for pair in self.blocks:
            attn, ff = cast(nn.ModuleList, pair)
            x = attn(x) + x
            x = ff(x) + x
        return x


class Downsample(nn.Module):
    """3×3 conv C -> C/2, then pixel unshuffle: C channels at H×W -> 2C at H/2×W/2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3×3 conv C -> 2C, then pixel shuffle: C channels at H×W -> C/2 at 2H×2W."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MST(nn.Module):
    """The proximal network of a CPMM: a 3-level U-shaped spectral transformer on ``[x, guide]``.

    Embedding (3×3 conv, no bias) -> per level an MSAB then a :class:`Downsample` -> bottleneck MSAB -> per level an
    :class:`Upsample`, concatenation with the skip, a 1×1 fuse conv and an MSAB -> 3×3 conv to ``out_dim`` plus a
    residual on ``x``. H and W must be multiples of 8.

    Args:
        in_dim: Channels of ``[x, guide]``.
        out_dim: Channels of ``x`` and of the output.
        cfg: Widths, blocks and FFN expansion.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: CorunConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.embedding = nn.Conv2d(in_dim, dim, 3, padding=1, bias=False)
        self.encoder_layers = nn.ModuleList()
        width = dim
        for level in range(LEVELS):
            msab = MSAB(width, width // dim, cfg.blocks[level], cfg.ffn_mult)
            self.encoder_layers.append(nn.ModuleList([msab, Downsample(width)]))
            width *= 2
        self.bottleneck = MSAB(width, width // dim, cfg.blocks[LEVELS], cfg.ffn_mult)
        self.decoder_layers = nn.ModuleList()
        for level in reversed(range(LEVELS)):
            half = width // 2
            fuse = nn.Conv2d(width, half, 1, bias=False)
            msab = MSAB(half, half // dim, cfg.blocks[level], cfg.ffn_mult)
            self.decoder_layers.append(nn.ModuleList([Upsample(width), fuse, msab]))
            width = half
        self.mapping = nn.Conv2d(dim, out_dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        fea = self.embedding(torch.cat([x, guide], dim=1))
        skips = []
        for layer in self.encoder_layers:
            msab, down = cast(nn.ModuleList, layer)
            fea = msab(fea)
            skips.append(fea)
            fea = down(fea)
        fea = self.bottleneck(fea)
        for layer, skip in zip(self.decoder_layers, reversed(skips), strict=True):
            up, fuse, msab = cast(nn.ModuleList, layer)
            fea = msab(fuse(torch.cat([up(fea), skip], dim=1)))
        return self.mapping(fea) + x


# --- the gradient-descent modules (closed form, A = 1) -----------------------------------------------------------


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x == 0, torch.full_like(x, TINY), x)


class TGDM(nn.Module):
    """Transmission gradient-descent module: the released closed-form transmission step.

    T̂ = Σ_c[(1 − P_c) + λ·T_prev / (1 − Ĵ_c)] / Σ_c[(1 − Ĵ_c) + λ / (1 − Ĵ_c)], clamped to [0.05, 0.999], with exact
    zeros of 1 − Ĵ and of the denominator replaced by 1e-7. (This is the released formula, not the exact
    least-squares minimiser; see CORUN.md §1.)

    Args:
        step_init: Initial λ (a free scalar afterwards, no reparametrisation).
    """

    def __init__(self, step_init: float = STEP_INIT) -> None:
        super().__init__()
        self.step_lambda = nn.Parameter(torch.full((1,), step_init))

    def forward(self, hazy: torch.Tensor, scene: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """T̂ (N×1×H×W) from P (N×3×H×W), the previous Ĵ (N×3×H×W) and the previous T (N×1×H×W)."""
        lam = self.step_lambda
        clear = _nonzero(1.0 - scene)
        num = ((1.0 - hazy) + lam * trans / clear).sum(dim=1, keepdim=True)
        den = _nonzero((clear + lam / clear).sum(dim=1, keepdim=True))
        return (num / den).clamp(T_MIN, T_MAX)


class SGDM(nn.Module):
    """Scene gradient-descent module: Ĵ = (T̂·P + T̂² − T̂ + γ·J_prev) / (T̂² + γ), clamped to [0, 1].

    The exact minimiser of ‖P − J·T̂ − (1 − T̂)‖² + γ‖J − J_prev‖² per pixel and channel.

    Args:
        step_init: Initial γ (a free scalar afterwards).
    """

    def __init__(self, step_init: float = STEP_INIT) -> None:
        super().__init__()
        self.step_lambda = nn.Parameter(torch.full((1,), step_init))

    def forward(self, hazy: torch.Tensor, scene: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """Ĵ (N×3×H×W) from P, the previous J and this stage's T̂ (N×1×H×W)."""
        gamma = self.step_lambda
        t2 = trans * trans
        return ((trans * hazy + t2 - trans + gamma * scene) / (t2 + gamma)).clamp(0.0, 1.0)


class CorunStage(nn.Module):
    """One unfolded stage: TGDM, T-CPMM (absent in the last stage), SGDM, S-CPMM.

    Args:
        cfg: The network's configuration.
        refine_transmission: Build T-CPMM (``trans_net``); the released last stage has none.
    """

    def __init__(self, cfg: CorunConfig, refine_transmission: bool = True) -> None:
        super().__init__()
        self.trans_prox = TGDM(cfg.step_init)
        self.trans_net = MST(4, 1, cfg) if refine_transmission else None
        self.dehaze_prox = SGDM(cfg.step_init)
        self.dehaze_net = MST(4, 3, cfg)

    def forward(
        self, hazy: torch.Tensor, scene: torch.Tensor, scene_hat: torch.Tensor, trans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One stage from P, Jₖ₋₁, Ĵₖ₋₁ and Tₖ₋₁.

        Returns:
            ``(Jₖ, Ĵₖ, Tₖ, T̂ₖ)``; Tₖ is T̂ₖ in a stage without T-CPMM.
        """
        trans_hat = self.trans_prox(hazy, scene_hat, trans)
        trans_new = trans_hat if self.trans_net is None else self.trans_net(trans_hat, scene)
        scene_hat = self.dehaze_prox(hazy, scene, trans_hat)
        return self.dehaze_net(scene_hat, trans_hat), scene_hat, trans_new, trans_hat


# --- padding and the model -----------------------------------------------------------------------------------------


def _min(a: int, b: int) -> int:
    """``min(a, b)`` without a comparison, so tracing records it (sizes are 0-dim tensors under tracing)."""
    return (a + b - abs(a - b)) // 2


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Pads bottom/right to a multiple: reflect as far as the side allows (pad < side), replicate the rest.

    Branch-free, so a traced graph keeps every amount symbolic; sides already at a multiple are unchanged.
    """
    h, w = x.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    refl_h, refl_w = _min(pad_h, h - 1), _min(pad_w, w - 1)
    x = F.pad(x, [0, refl_w, 0, refl_h], mode="reflect")
    return F.pad(x, [0, pad_w - refl_w, 0, pad_h - refl_h], mode="replicate")


class CORUN(nn.Module):
    """The cooperative unfolding network: hazy RGB in [0, 1] -> (dehazed image, transmission map).

    Submodule names follow the released code (``basic`` holds the K − 2 middle stages, then ``first`` and
    ``last``), so the authors' state dict loads with ``strict=True`` into the ``corun`` variant.

    Args:
        cfg: The configuration; see :class:`CorunConfig`.
    """

    def __init__(self, cfg: CorunConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or CorunConfig()
        self.cfg = cfg
        # Registered in the released order (basic, first, last) so state_dict() lists keys as theirs does.
        self.basic = nn.ModuleList(CorunStage(cfg) for _ in range(cfg.stages - 2))
        self.first = CorunStage(cfg)
        self.last = CorunStage(cfg, refine_transmission=False)
        self.apply(_init_weights)

    def _check(self, hazy01: torch.Tensor) -> None:
        if torch.jit.is_tracing():
            return
        if hazy01.dim() != 4 or hazy01.shape[1] != 3:
            raise ValueError(f"expected an N×3×H×W image batch, got {tuple(hazy01.shape)}")
        if min(hazy01.shape[-2:]) < 1:
            raise ValueError(f"expected H, W >= 1, got {tuple(hazy01.shape[-2:])}")

    def unfold(self, hazy: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The K stages on a hazy batch whose H and W are multiples of 8 (the released network's forward).

        Returns:
            ``(images, transmissions)``: Jₖ and T̂ₖ for k = 1..K, in stage order (the last entry is the output).
        """
        scene = scene_hat = hazy
        trans = torch.full_like(hazy[:, :1], T_INIT)
        images: list[torch.Tensor] = []
        transmissions: list[torch.Tensor] = []
        for stage in [self.first, *self.basic, self.last]:
            scene, scene_hat, trans, trans_hat = stage(hazy, scene, scene_hat, trans)
            images.append(scene)
            transmissions.append(trans_hat)
        return images, transmissions

    def forward_stages(self, hazy01: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every stage's Jₖ (N×3×H×W) and T̂ₖ (N×1×H×W) for an input of any size, in stage order."""
        self._check(hazy01)
        h, w = hazy01.shape[-2:]
        images, transmissions = self.unfold(pad_to_multiple(hazy01))
        return [j[:, :, :h, :w] for j in images], [t[:, :, :h, :w] for t in transmissions]

    def forward(self, hazy01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dehazes a batch.

        Args:
            hazy01: N×3×H×W hazy RGB in [0, 1], any H, W >= 1.

        Returns:
            ``(dehazed, transmission)``: J_K, N×3×H×W in [0, 1] scale (not clamped), and T̂_K, N×1×H×W in
            [0.05, 0.999].
        """
        self._check(hazy01)
        h, w = hazy01.shape[-2:]
        images, transmissions = self.unfold(pad_to_multiple(hazy01))
        return images[-1][:, :, :h, :w], transmissions[-1][:, :, :h, :w]


def _init_weights(module: nn.Module) -> None:
    """Trunc-normal (std 0.02) for the attention's matrices, zero biases; convolutions keep PyTorch's default."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# --- variants -------------------------------------------------------------------------------------------------------


def _corun() -> CorunConfig:
    """The released layout (K = 4, widths 30/60/120/240): 18,674,262 parameters, 71.5 GMACs at 256²."""
    return CorunConfig()


def _corun_small() -> CorunConfig:
    """The CPU size: a tenth of ``corun``'s MACs (7.19 G at 256²), 1,852,424 parameters; all three stage kinds."""
    return CorunConfig(stages=3, dim=12, ffn_mult=2)


def _corun_tiny() -> CorunConfig:
    """For tests: every mechanism, very few channels."""
    return CorunConfig(stages=3, dim=2, ffn_mult=2)


CORUN_VARIANTS: dict[str, Callable[[], CorunConfig]] = {
    "corun": _corun,
    "corun_small": _corun_small,
    "corun_tiny": _corun_tiny,
}


def get_corun_config(name: str) -> CorunConfig:
    """The configuration registered under ``name``.

    Raises:
        ValueError: Unknown name; the message lists the choices.
    """
    try:
        builder = CORUN_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown CORUN variant {name!r}; choices: {', '.join(sorted(CORUN_VARIANTS))}") from None
    return builder()


def create_corun(name: str) -> CORUN:
    """A randomly initialised CORUN of a registered variant (train mode, like any new ``nn.Module``)."""
    return CORUN(get_corun_config(name))
