"""One iteration of DCMPNet's dual-task training (Zhang et al., CVPR 2024, Eq. 3-12) on a batch.

Per iteration, ``formulation: alternating`` (the paper):

1. **Ψ step (Eq. 9/10).** Φ's output u* = Φ(ũ*) is detached. Ψ is trained on
   ``depth_loss(Ψ(u*), M_u, A_dr) + depth_loss(Ψ(ũ*), M_u, A_dr)`` where ``A_dr`` is Ψ's difference perceptron
   applied to R = u* − u (Eq. 8). Optimiser: Adam over Ψ + its perceptron.
2. **Φ step (Eq. 11/12)** with Ψ frozen (no parameter gradients, but gradients flow *through* Ψ into Φ):
   ``dehaze_loss(u*, u, ũ*, A_er[, VGG]) + w_dc·L1(Ψ(u*), M_u) + w_unet·l_UNET`` where ``A_er`` is Φ's own
   perceptron applied to M_{u*} − M_u with M_{u*} = Ψ(u*), and l_UNET (Eq. 5) compares Φ's *own* U-Net features
   of ũ* and u. Φ's depth input is Ψ(ũ*) (no gradient); the ``dcmpnet`` variant (internal_depth) ignores it.
   Optimiser: Adam over Φ + its perceptron.

``formulation: depth_only`` runs the Ψ step alone with Φ frozen (a first stage for a warm-started Φ).

``formulation: joint`` reproduces the released code's optimisation with the same loss terms: one forward without
any detach (Φ takes Ψ(ũ*) with gradient), one backward on L_dehaze + L_depth, both optimisers step.

Difference perceptrons are trained adversarially: their coefficient map passes through ``reverse_gradient``, so
the same optimiser step that makes the network *minimise* ``mean(A ⊙ error)`` makes the perceptron *maximise* it,
i.e. move its weight (mean 1, non-negative) onto the pixels with the largest error — "focus on the regions where
dehazing/depth is not ideal". The perceptron's input difference is detached: otherwise the reversed gradient
would also flow back into the network and train it to *increase* its error. The depth error reaches Φ instead
through the explicit consistency term ``L1(Ψ(u*), M_u)`` (the released code's 0.1·L1(Ψ(J), D)).

Departures from the released code (DCMPNET.md §3, §7): alternating optimisation by default; M_u is the dataset's
true relative depth, not RA-Depth disparity; Eq. 5 uses Φ's own U-Net (theirs had zero gradient); the perceptron's
map has mean 1 (theirs 1/(H·W)); the cosine schedule is per step, not per epoch; validation uses held-out training
scenes, never the test split; the perceptual VGG term is on only when a weights file is configured.

With ``distill`` set (:mod:`training.distill`), the batches come from a mixture of sources and carry a teacher's
output (an extra L1 target of weight ``teacher_w``, where ground truth exists) and per-pixel depth weights
(``depth_w``: 1 for true depth, the confidence of a physics pseudo-depth on real photos, 0 where no depth is
known); the loss terms below use them, and batches without them mean weight 1 for depth and no teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from model.dcmpnet import DCMPNet
from model.depthnet import DepthNet
from training.config import LossConfig
from training.devices import autocast
from training.losses import ContrastivePerceptualLoss, dehaze_loss, depth_loss, unet_feature_loss
from training.perceptron import DifferencePerceptron, reverse_gradient

__all__ = ["LOSS_KEYS", "Batch", "DualTaskStep"]

LOSS_KEYS = ("depth", "dehaze", "unet", "depth_consistency")


@dataclass(frozen=True)
class Batch:
    """A training batch on the device; ``depth_w`` is all ones and ``teacher`` ``None`` when the data has none."""

    hazy: torch.Tensor
    clear: torch.Tensor
    depth: torch.Tensor
    depth_w: torch.Tensor
    teacher: torch.Tensor | None
    teacher_w: torch.Tensor

    @classmethod
    def of(cls, batch: dict, device: torch.device) -> Batch:
        def get(key: str) -> torch.Tensor | None:
            value = batch.get(key)
            return None if value is None else value.to(device, non_blocking=True)

        hazy, clear, depth = (cast(torch.Tensor, get(k)) for k in ("hazy", "clear", "depth"))
        depth_w = get("depth_w")
        teacher_w = get("teacher_w")
        return cls(
            hazy,
            clear,
            depth,
            torch.ones_like(depth) if depth_w is None else depth_w,
            get("teacher"),
            hazy.new_zeros(hazy.shape[0]) if teacher_w is None else teacher_w.view(-1),
        )


@dataclass
class DualTaskStep:
    """The networks, optimisers and loss settings of one run, and its two formulations of an iteration.

    ``alternating`` and ``joint`` each take a batch on the device, step both optimisers once (gradient scaling,
    clipping at ``grad_clip``) and return the loss values; the schedulers are the trainer's.
    """

    phi: DCMPNet
    psi: DepthNet
    perc_d: DifferencePerceptron  # Ψ's: on R = u* − u (Eq. 8)
    perc_e: DifferencePerceptron  # Φ's: on M_{u*} − M_u
    opt_phi: torch.optim.Optimizer
    opt_psi: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss: LossConfig
    grad_clip: float
    amp: torch.dtype | None
    device: torch.device
    perceptual: ContrastivePerceptualLoss | None = None
    internal_depth: bool = False

    def run(self, formulation: str, b: Batch) -> dict[str, float]:
        """One iteration of ``formulation`` (``alternating``, ``joint`` or ``depth_only``) with every network in
        training mode (Φ in eval mode for ``depth_only``)."""
        for m in self.modules():
            m.train()
        if formulation == "depth_only":
            self.phi.eval()
            return self.depth_only(b)
        return self.alternating(b) if formulation == "alternating" else self.joint(b)

    def modules(self) -> list[nn.Module]:
        """Φ, Ψ and both perceptrons."""
        return [self.phi, self.psi, self.perc_d, self.perc_e]

    def _optimise(
        self, loss: torch.Tensor, opts: Sequence[torch.optim.Optimizer], modules: Sequence[nn.Module]
    ) -> None:
        """Backward on ``loss``, then (unscale, clip, step) for each optimiser. Gradients must be zeroed before."""
        self.scaler.scale(loss).backward()
        for opt in opts:
            self.scaler.unscale_(opt)
        if self.grad_clip > 0:
            params = [p for m in modules for p in m.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        for opt in opts:
            self.scaler.step(opt)

    def _depth_loss(
        self, pred: torch.Tensor, target: torch.Tensor, coeff: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 9 with the configured absolute and scale-invariant weights."""
        lw = self.loss
        return depth_loss(pred, target, coeff, w, lw.depth_absolute_weight, lw.depth_scale_invariant_weight)

    def _phi_forward(self, hazy: torch.Tensor, depth_in: torch.Tensor | None) -> tuple[torch.Tensor, list]:
        out, feats = self.phi.forward_with_features(hazy, None if self.internal_depth else depth_in)
        return out, list(feats)

    def _phi_extras(
        self, out: torch.Tensor, feats: list, b: Batch, m_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5 on Φ's own U-Net and the depth-consistency term (weighted by the depth's trust), both weighted."""
        lw = self.loss
        l_unet = out.new_zeros(())
        if lw.unet_weight > 0:
            l_unet = lw.unet_weight * unet_feature_loss(feats, list(self.phi.unet_features(b.clear)))
        l_dc = lw.depth_consistency_weight * ((m_out - b.depth).abs() * b.depth_w).mean()
        return l_unet, l_dc

    def _dehaze_term(self, out: torch.Tensor, b: Batch, a_er: torch.Tensor) -> torch.Tensor:
        """Eq. 11 towards the target, plus the L1 term towards the teacher's output where one is given."""
        loss = dehaze_loss(out, b.clear, b.hazy, a_er, None, self.loss.l1_weight)
        if self.perceptual is not None:
            loss = loss + self.loss.perceptual_weight * self.perceptual(out, b.clear, b.hazy)
        if b.teacher is not None:
            loss = loss + ((out - b.teacher).abs() * b.teacher_w.view(-1, 1, 1, 1)).mean()
        return loss

    def _coeff(self, perceptron: DifferencePerceptron, diff: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(perceptron(diff.detach().float()), self.loss.reverse_scale)

    def alternating(self, b: Batch) -> dict[str, float]:
        hazy, clear, depth, dw = b.hazy, b.clear, b.depth, b.depth_w
        # Ψ step (Eq. 9/10): Φ's output detached.
        with autocast(self.amp, self.device):
            m_hazy = self.psi(hazy)
            out, feats = self._phi_forward(hazy, m_hazy.detach())
            m_out_d = self.psi(out.detach())
            a_dr = self._coeff(self.perc_d, out - clear)
            l_depth = self._depth_loss(m_out_d.float(), depth, a_dr, dw) + self._depth_loss(
                m_hazy.float(), depth, a_dr, dw
            )
        self.opt_psi.zero_grad(set_to_none=True)
        self._optimise(l_depth, [self.opt_psi], [self.psi, self.perc_d])
        # Φ step (Eq. 11/12): Ψ frozen, gradients flow through it into Φ.
        self.psi.requires_grad_(False)
        try:
            with autocast(self.amp, self.device):
                m_out = self.psi(out).float()
                a_er = self._coeff(self.perc_e, (m_out - depth) * dw)
                l_dehaze = self._dehaze_term(out.float(), b, a_er)
                l_unet, l_dc = self._phi_extras(out, feats, b, m_out)
                loss_phi = l_dehaze + l_unet + l_dc
            self.opt_phi.zero_grad(set_to_none=True)
            self._optimise(loss_phi, [self.opt_phi], [self.phi, self.perc_e])
        finally:
            self.psi.requires_grad_(True)
        self.scaler.update()
        return _floats(depth=l_depth, dehaze=l_dehaze, unet=l_unet, depth_consistency=l_dc)

    def depth_only(self, b: Batch) -> dict[str, float]:
        """The Ψ step of :meth:`alternating` alone, Φ frozen (no gradient, no update): a first stage for a
        warm-started Φ, whose depth input is worth using only once Ψ's depth is good, and whose output a weak Ψ's
        depth-consistency gradient would only disturb. ``dehaze`` reports Φ's plain L1 for the record."""
        hazy, clear, depth, dw = b.hazy, b.clear, b.depth, b.depth_w
        with autocast(self.amp, self.device):
            m_hazy = self.psi(hazy)
            with torch.no_grad():
                out, _ = self._phi_forward(hazy, m_hazy.detach())
            m_out_d = self.psi(out)
            a_dr = self._coeff(self.perc_d, out - clear)
            l_depth = self._depth_loss(m_out_d.float(), depth, a_dr, dw) + self._depth_loss(
                m_hazy.float(), depth, a_dr, dw
            )
        self.opt_psi.zero_grad(set_to_none=True)
        self._optimise(l_depth, [self.opt_psi], [self.psi, self.perc_d])
        self.scaler.update()
        zero = l_depth.new_zeros(())
        return _floats(depth=l_depth, dehaze=(out.float() - clear).abs().mean(), unet=zero, depth_consistency=zero)

    def joint(self, b: Batch) -> dict[str, float]:
        hazy, clear, depth, dw = b.hazy, b.clear, b.depth, b.depth_w
        with autocast(self.amp, self.device):
            m_hazy = self.psi(hazy)
            out, feats = self._phi_forward(hazy, m_hazy)
            m_out = self.psi(out).float()
            a_dr = self._coeff(self.perc_d, out - clear)
            a_er = self._coeff(self.perc_e, (m_out - depth) * dw)
            l_depth = self._depth_loss(m_out, depth, a_dr, dw) + self._depth_loss(m_hazy.float(), depth, a_dr, dw)
            l_dehaze = self._dehaze_term(out.float(), b, a_er)
            l_unet, l_dc = self._phi_extras(out, feats, b, m_out)
        self.opt_phi.zero_grad(set_to_none=True)
        self.opt_psi.zero_grad(set_to_none=True)
        self._optimise(l_depth + l_dehaze + l_unet + l_dc, [self.opt_phi, self.opt_psi], self.modules())
        self.scaler.update()
        return _floats(depth=l_depth, dehaze=l_dehaze, unet=l_unet, depth_consistency=l_dc)


def _floats(**tensors: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in tensors.items()}
