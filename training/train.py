"""``dehaze train --config FILE [--resume]``: DCMPNet's dual-task training (Zhang et al., CVPR 2024, Eq. 3-12).

Per iteration, ``formulation: alternating`` (the paper):

1. **Ψ step (Eq. 9/10).** Φ's output u* = Φ(ũ*) is detached. Ψ is trained on
   ``depth_loss(Ψ(u*), M_u, A_dr) + depth_loss(Ψ(ũ*), M_u, A_dr)`` where ``A_dr`` is Ψ's difference perceptron
   applied to R = u* − u (Eq. 8). Optimiser: Adam over Ψ + its perceptron.
2. **Φ step (Eq. 11/12)** with Ψ frozen (no parameter gradients, but gradients flow *through* Ψ into Φ):
   ``dehaze_loss(u*, u, ũ*, A_er[, VGG]) + w_dc·L1(Ψ(u*), M_u) + w_unet·l_UNET`` where ``A_er`` is Φ's own
   perceptron applied to M_{u*} − M_u with M_{u*} = Ψ(u*), and l_UNET (Eq. 5) compares Φ's *own* U-Net features
   of ũ* and u. Φ's depth input is Ψ(ũ*) (no gradient); the ``dcmpnet`` variant (internal_depth) ignores it.
   Optimiser: Adam over Φ + its perceptron.

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

Outputs in ``run_dir``: ``config.yaml``, ``log.jsonl`` (one line per validation: step, psnr, ssim, depth metrics,
mean training losses since the previous validation, lr, elapsed seconds), ``last.pt`` and ``best.pt`` (by val
PSNR) written atomically by ``model.checkpoint.save_checkpoint`` with optimiser, scheduler, scaler and perceptron
states, step and config in ``extra``. ``--resume`` continues from ``last.pt`` exactly: the same learning-rate curve,
the same remaining batches of the current epoch in the same order (the order of an epoch is a pure function of seed
and epoch, and a sample of its index), and the saved torch random state.

With ``distill`` set (:mod:`training.distill`), the batches come from a mixture of sources and carry a teacher's
output (an extra L1 target of weight ``teacher_w``, where ground truth exists) and per-pixel depth weights
(``depth_w``: 1 for true depth, the confidence of a physics pseudo-depth on real photos, 0 where no depth is
known); the loss terms below use them, and batches without them mean weight 1 for depth and no teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset, Subset

from training.config import TrainConfig, load_config, resolve_path
from training.data import HazeMix, PairedFolder, SyntheticHaze
from training.loop import LoopSettings, RunningMeans, batches, epoch_order, prepare_run_dir, run_steps
from training.losses import ContrastivePerceptualLoss, dehaze_loss, depth_loss, unet_feature_loss
from training.metrics import depth_errors, mean_finite_psnr, psnr, ssim
from training.perceptron import DifferencePerceptron, reverse_gradient

__all__ = ["Trainer", "add_arguments", "main", "run"]

logger = logging.getLogger(__name__)

LOSS_KEYS = ("depth", "dehaze", "unet", "depth_consistency")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config`` and ``--resume`` to the ``dehaze train`` parser."""
    parser.add_argument("--config", required=True, type=Path, help="training YAML (see training/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/last.pt")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, dotted keys, YAML values (e.g. --set formulation=joint --set data.crop=128)",
    )


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML).

    Raises:
        ValueError: A pair without ``=`` or with an empty key.
    """
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ValueError(f"--set expects KEY=VALUE with a dotted key, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    """Runs training from parsed arguments; returns the exit code. A CORUN variant goes to its own trainer."""
    from training.corun_config import is_corun_config

    overrides = parse_overrides(args.set)
    if is_corun_config(args.config, overrides):
        from training.corun_train import run_corun

        return run_corun(args.config, overrides, resume=args.resume)
    cfg = load_config(args.config, overrides)
    Trainer(cfg, resume=args.resume).train()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m training.train --config FILE [--resume]``."""
    parser = argparse.ArgumentParser(prog="dehaze train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def describe_hardware(device: torch.device) -> str:
    """The device a run trains on, in words (recorded in every checkpoint)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")), ""
    )
    return f"CPU {model or platform.processor() or 'unknown'}, {torch.get_num_threads()} torch threads"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a config ``amp`` mode (``None``: full precision). Mixed precision is CUDA-only."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def cosine_factor(step: int, total: int, lr0: float, lr_min: float) -> float:
    """Multiplier of ``lr0`` giving a cosine decay from ``lr0`` to ``lr_min`` over ``total`` steps."""
    progress = min(step, total) / max(total, 1)
    return (lr_min + (lr0 - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))) / lr0


_Running = RunningMeans  # the running loss means between validations (training.loop)


class Trainer:
    """Builds the networks, data and optimisers from a config and runs the training loop.

    Args:
        cfg: The validated config.
        resume: Continue from ``run_dir/last.pt``.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        from model.dcmpnet import DCMPNet
        from model.depthnet import DepthNet
        from model.variants import get_variant

        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest convolutions
        self.amp = amp_dtype(cfg.optim.amp, self.device)
        self.run_dir = resolve_path(cfg.run_dir)
        self.variant = get_variant(cfg.variant)
        self.internal_depth = bool(getattr(self.variant.phi, "internal_depth", False))
        self.phi = DCMPNet(self.variant.phi).to(self.device)
        self.psi = DepthNet(self.variant.psi).to(self.device)
        hidden = cfg.loss.perceptron_hidden
        self.perc_d = DifferencePerceptron(3, hidden).to(self.device)  # Ψ's: on R = u* − u (Eq. 8)
        self.perc_e = DifferencePerceptron(1, hidden).to(self.device)  # Φ's: on M_{u*} − M_u
        o = cfg.optim
        self.opt_psi = torch.optim.Adam(
            [*self.psi.parameters(), *self.perc_d.parameters()], o.lr_psi, betas=o.betas, weight_decay=o.weight_decay
        )
        self.opt_phi = torch.optim.Adam(
            [*self.phi.parameters(), *self.perc_e.parameters()], o.lr_phi, betas=o.betas, weight_decay=o.weight_decay
        )
        self.total_steps = cfg.max_steps  # the schedule's length; fit_steps_to_wall may re-fit it once
        self.steps_fitted = False
        self.sched_psi = self._scheduler(self.opt_psi, o.lr_psi)
        self.sched_phi = self._scheduler(self.opt_phi, o.lr_phi)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.perceptual = self._perceptual()
        self._init_tag = "random-init"  # names the Ψ that made the cached prior depths (see training.sources)
        if resume:
            self._init_tag = _saved_init_tag(self.run_dir / "last.pt", self._init_tag)
        elif cfg.init_from is not None:
            self._init_weights(resolve_path(cfg.init_from))
        self.train_set, self.val_set = self._datasets()
        self.step = 0
        self.best_psnr = -math.inf
        self.elapsed_before = 0.0
        self._prepare_run_dir(resume)

    # ----- construction helpers -----

    def _scheduler(self, opt: torch.optim.Optimizer, lr0: float) -> torch.optim.lr_scheduler.LambdaLR:
        lr_min = self.cfg.optim.lr_min
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, self.total_steps, lr0, lr_min))

    def fit_max_steps(self, max_steps: int) -> None:
        """Sets the run's length (and so the cosine schedule's) to ``max_steps``, once (``fit_steps_to_wall``)."""
        logger.info("fit_steps_to_wall: max_steps %d -> %d at step %d", self.total_steps, max_steps, self.step)
        self.total_steps, self.steps_fitted = max_steps, True
        self.cfg = self.cfg.model_copy(update={"max_steps": max_steps})
        (self.run_dir / "config.yaml").write_text(self.cfg.to_yaml())

    def _perceptual(self) -> ContrastivePerceptualLoss | None:
        path = self.cfg.loss.vgg_weights
        if path is None or self.cfg.loss.perceptual_weight == 0:
            logger.info("perceptual (VGG19 contrastive) term OFF: no loss.vgg_weights file configured")
            return None
        from training.vgg import VGG19Features

        extractor = VGG19Features.from_file(resolve_path(path)).to(self.device).eval()
        logger.info("perceptual (VGG19 contrastive) term ON, weights from %s", path)
        return ContrastivePerceptualLoss(extractor)

    def _init_weights(self, path: Path) -> None:
        from model.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        if ckpt.variant.name != self.variant.name:
            raise ValueError(
                f"init_from {path} holds variant {ckpt.variant.name!r}, config asks for {self.variant.name!r}"
            )
        self.phi.load_state_dict(ckpt.phi.state_dict())
        self.psi.load_state_dict(ckpt.psi.state_dict())
        self._init_tag = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
        logger.info("initialised Φ and Ψ from %s (%s)", path, self._init_tag)

    def _estimate_depth(self, image: np.ndarray) -> np.ndarray:
        """Ψ's relative depth of an H×W×3 image (for clear photos without depth), H×W×1."""
        from model.pipeline import depth_to_unit

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device)
        self.psi.eval()
        try:
            with torch.inference_mode():
                depth = depth_to_unit(self.psi(x), is_disparity=False)
        finally:
            self.psi.train()
        return depth[0].permute(1, 2, 0).float().cpu().numpy()

    def _datasets(self) -> tuple[Dataset, Dataset]:
        d, seed = self.cfg.data, self.cfg.seed
        root = resolve_path(d.root)
        held_out = [*d.val_scenes, *d.test_scenes]
        val = self._val_set(root)
        if self.cfg.distill is not None:
            from training.distill import build_distill_set

            train_set = build_distill_set(self.cfg, self._estimate_depth, self._init_tag)
            logger.info("data: distillation mixture of %d items/epoch, %d validation images", len(train_set), len(val))
            return train_set, val
        real = PairedFolder(root, crop=d.crop, seed=seed, exclude=held_out)
        if not real.has_depth:
            raise ValueError(f"training needs depth maps (the target M_u): {root / 'depth'} is missing")
        train: Dataset = real
        if d.synthetic_fraction > 0:
            synth = SyntheticHaze(
                root,
                crop=d.crop,
                seed=seed + 1,
                length=len(real),
                exclude=held_out,
                beta_range=d.beta_range,
                airlight_range=d.airlight_range,
                depth_scale=d.depth_scale,
            )
            train = HazeMix(real, synth, d.synthetic_fraction, seed=seed + 2)
        if len(train) < d.batch_size:
            raise ValueError(f"{len(train)} training items is fewer than batch_size={d.batch_size}")
        logger.info("data: %d training items (%s), %d validation images", len(train), root, len(val))
        return train, val

    def _val_set(self, root: Path) -> Dataset:
        d = self.cfg.data
        val: Dataset = PairedFolder(root, crop=d.val_crop, scenes=d.val_scenes, augment=False)
        if d.val_max_images is not None and d.val_max_images < len(val):
            idx = np.linspace(0, len(val) - 1, d.val_max_images).round().astype(int)
            val = Subset(val, sorted(set(idx.tolist())))
        return val

    def _prepare_run_dir(self, resume: bool) -> None:
        prepare_run_dir(self.run_dir, self.cfg.to_yaml(), resume, self._load)
        if self.steps_fitted:  # a resumed fitted run: its config.yaml keeps the fitted length
            (self.run_dir / "config.yaml").write_text(self.cfg.to_yaml())

    # ----- checkpoints -----

    def _extra(self) -> dict:
        return {
            "step": self.step,
            "best_psnr": self.best_psnr,
            "elapsed": self.elapsed_before + (time.monotonic() - self._t0),
            "config": self.cfg.model_dump(mode="json"),
            "opt_phi": self.opt_phi.state_dict(),
            "opt_psi": self.opt_psi.state_dict(),
            "sched_phi": self.sched_phi.state_dict(),
            "sched_psi": self.sched_psi.state_dict(),
            "scaler": self.scaler.state_dict(),
            "perc_d": self.perc_d.state_dict(),
            "perc_e": self.perc_e.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "init_tag": self._init_tag,
            "max_steps": self.total_steps,
            "steps_fitted": self.steps_fitted,
        }

    def _save(self, name: str, metrics: dict) -> None:
        from model.checkpoint import save_checkpoint

        metadata = {
            "step": self.step,
            "formulation": self.cfg.formulation,
            "data": str(self.cfg.data.root),
            "val_scenes": list(self.cfg.data.val_scenes),
            "test_scenes": list(self.cfg.data.test_scenes),
            "hardware": describe_hardware(self.device),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
        }
        # Ψ is trained on true depth (0 = near), whatever the variant's default convention for foreign weights.
        save_checkpoint(
            self.run_dir / name,
            self.phi,
            self.psi,
            self.variant,
            metadata,
            extra=self._extra(),
            depth_convention="depth",
        )

    def _load(self, path: Path) -> None:
        from model.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, map_location=self.device)
        extra = _extra_of(ckpt)
        if ckpt.variant.name != self.variant.name:
            raise ValueError(f"{path} holds variant {ckpt.variant.name!r}, config asks for {self.variant.name!r}")
        self.phi.load_state_dict(ckpt.phi.state_dict())
        self.psi.load_state_dict(ckpt.psi.state_dict())
        self.perc_d.load_state_dict(extra["perc_d"])
        self.perc_e.load_state_dict(extra["perc_e"])
        self.opt_phi.load_state_dict(extra["opt_phi"])
        self.opt_psi.load_state_dict(extra["opt_psi"])
        self.sched_phi.load_state_dict(extra["sched_phi"])
        self.sched_psi.load_state_dict(extra["sched_psi"])
        self.scaler.load_state_dict(extra["scaler"])
        self.step = int(extra["step"])
        self.best_psnr = float(extra["best_psnr"])
        self.elapsed_before = float(extra["elapsed"])
        if extra.get("steps_fitted"):  # a fitted run keeps its fitted length (and schedule) on resume
            self.fit_max_steps(int(extra["max_steps"]))
        if "torch_rng" in extra:
            torch.set_rng_state(extra["torch_rng"])
        else:  # checkpoints written before the random state was saved
            torch.manual_seed(self.cfg.seed + self.step)
        logger.info("resumed from %s at step %d (best val PSNR %.3f)", path, self.step, self.best_psnr)

    # ----- the loop -----

    def epoch_order(self, epoch: int) -> list[int]:
        """The order in which epoch ``epoch`` visits the training items: a pure function of seed and epoch."""
        return epoch_order(self.cfg.seed, len(self.train_set), epoch)  # type: ignore[arg-type]

    def _batches(self) -> Iterator[dict]:
        """Batches from the current step on; after a resume, the rest of the interrupted epoch comes first."""
        d = self.cfg.data
        pin = self.device.type == "cuda"
        return batches(self.train_set, self.step, d.batch_size, self.cfg.seed, d.num_workers, pin)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def _optimise(
        self, loss: torch.Tensor, opts: Sequence[torch.optim.Optimizer], modules: Sequence[nn.Module]
    ) -> None:
        """Backward on ``loss``, then (unscale, clip, step) for each optimiser. Gradients must be zeroed before."""
        self.scaler.scale(loss).backward()
        for opt in opts:
            self.scaler.unscale_(opt)
        if self.cfg.optim.grad_clip > 0:
            params = [p for m in modules for p in m.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        for opt in opts:
            self.scaler.step(opt)

    def _phi_forward(self, hazy: torch.Tensor, depth_in: torch.Tensor | None) -> tuple[torch.Tensor, list]:
        out, feats = self.phi.forward_with_features(hazy, None if self.internal_depth else depth_in)
        return out, list(feats)

    def _phi_extras(
        self, out: torch.Tensor, feats: list, b: _Batch, m_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5 on Φ's own U-Net and the depth-consistency term (weighted by the depth's trust), both weighted."""
        lw = self.cfg.loss
        l_unet = out.new_zeros(())
        if lw.unet_weight > 0:
            l_unet = lw.unet_weight * unet_feature_loss(feats, list(self.phi.unet_features(b.clear)))
        l_dc = lw.depth_consistency_weight * ((m_out - b.depth).abs() * b.depth_w).mean()
        return l_unet, l_dc

    def _dehaze_term(self, out: torch.Tensor, b: _Batch, a_er: torch.Tensor) -> torch.Tensor:
        """Eq. 11 towards the target, plus the L1 term towards the teacher's output where one is given."""
        loss = dehaze_loss(out, b.clear, b.hazy, a_er, None, self.cfg.loss.l1_weight)
        if self.perceptual is not None:
            loss = loss + self.cfg.loss.perceptual_weight * self.perceptual(out, b.clear, b.hazy)
        if b.teacher is not None:
            loss = loss + ((out - b.teacher).abs() * b.teacher_w.view(-1, 1, 1, 1)).mean()
        return loss

    def _coeff(self, perceptron: DifferencePerceptron, diff: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(perceptron(diff.detach().float()), self.cfg.loss.reverse_scale)

    def _step_alternating(self, b: _Batch) -> dict[str, float]:
        hazy, clear, depth, dw = b.hazy, b.clear, b.depth, b.depth_w
        # Ψ step (Eq. 9/10): Φ's output detached.
        with self._autocast():
            m_hazy = self.psi(hazy)
            out, feats = self._phi_forward(hazy, m_hazy.detach())
            m_out_d = self.psi(out.detach())
            a_dr = self._coeff(self.perc_d, out - clear)
            l_depth = depth_loss(m_out_d.float(), depth, a_dr, dw) + depth_loss(m_hazy.float(), depth, a_dr, dw)
        self.opt_psi.zero_grad(set_to_none=True)
        self._optimise(l_depth, [self.opt_psi], [self.psi, self.perc_d])
        # Φ step (Eq. 11/12): Ψ frozen, gradients flow through it into Φ.
        self.psi.requires_grad_(False)
        try:
            with self._autocast():
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

    def _step_joint(self, b: _Batch) -> dict[str, float]:
        hazy, clear, depth, dw = b.hazy, b.clear, b.depth, b.depth_w
        with self._autocast():
            m_hazy = self.psi(hazy)
            out, feats = self._phi_forward(hazy, m_hazy)
            m_out = self.psi(out).float()
            a_dr = self._coeff(self.perc_d, out - clear)
            a_er = self._coeff(self.perc_e, (m_out - depth) * dw)
            l_depth = depth_loss(m_out, depth, a_dr, dw) + depth_loss(m_hazy.float(), depth, a_dr, dw)
            l_dehaze = self._dehaze_term(out.float(), b, a_er)
            l_unet, l_dc = self._phi_extras(out, feats, b, m_out)
        self.opt_phi.zero_grad(set_to_none=True)
        self.opt_psi.zero_grad(set_to_none=True)
        self._optimise(l_depth + l_dehaze + l_unet + l_dc, [self.opt_phi, self.opt_psi], self._all_modules())
        self.scaler.update()
        return _floats(depth=l_depth, dehaze=l_dehaze, unet=l_unet, depth_consistency=l_dc)

    def _all_modules(self) -> list[nn.Module]:
        return [self.phi, self.psi, self.perc_d, self.perc_e]

    def train_step(self, batch: dict) -> dict[str, float]:
        """One iteration of the configured formulation on a batch; returns the loss values."""
        for m in self._all_modules():
            m.train()
        b = _Batch.of(batch, self.device)
        step = self._step_alternating if self.cfg.formulation == "alternating" else self._step_joint
        losses = step(b)
        self.sched_phi.step()
        self.sched_psi.step()
        self.step += 1
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite loss at step {self.step}: {losses}")
        return losses

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM of the clamped dehazed output and depth AbsRel/δ1 on the validation scenes (batch 1)."""
        from model.pipeline import DehazePipeline

        pipeline = DehazePipeline(self.phi, self.psi).to(self.device).eval()
        ps, ss, rel, d1 = [], [], [], []
        for i in range(len(self.val_set)):
            item = self.val_set[i]
            with self._autocast():
                out, dep = pipeline(item["hazy"][None].to(self.device))
            ps.append(psnr(out.float().clamp(0, 1), item["clear"]))
            ss.append(ssim(out.float().clamp(0, 1), item["clear"]))
            with contextlib.suppress(ValueError):  # a constant predicted depth cannot be median-scaled
                r, d = depth_errors(dep.float().clamp_min(0), item["depth"])
                rel.append(r)
                d1.append(d)
        result = {"psnr": mean_finite_psnr(ps), "ssim": float(np.mean(ss))}
        if rel:
            result.update(depth_absrel=float(np.mean(rel)), depth_delta1=float(np.mean(d1)))
        return result

    def _validate_and_save(self, running: _Running) -> None:
        metrics = self.validate()
        elapsed = self.elapsed_before + (time.monotonic() - self._t0)
        record = {
            "step": self.step,
            **metrics,
            "losses": running.means(),
            "lr_phi": self.sched_phi.get_last_lr()[0],
            "lr_psi": self.sched_psi.get_last_lr()[0],
            "elapsed": round(elapsed, 3),
        }
        with (self.run_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("step %d: val PSNR %.3f SSIM %.4f", self.step, metrics["psnr"], metrics["ssim"])
        if metrics["psnr"] > self.best_psnr:
            self.best_psnr = metrics["psnr"]
            self._save("best.pt", metrics)
        self._save("last.pt", metrics)

    def train(self) -> dict[str, float]:
        """Runs until ``max_steps`` or ``max_wall_seconds``; validates/saves every ``val_every`` and at the end.

        Returns:
            The last step's losses (empty when there was nothing left to do).
        """
        self._t0 = time.monotonic()
        cfg = self.cfg
        settings = LoopSettings(
            self.total_steps,
            cfg.val_every,
            cfg.data.batch_size,
            cfg.progress,
            cfg.max_wall_seconds,
            fit_to_wall=cfg.fit_steps_to_wall and not self.steps_fitted,
        )
        return run_steps(self, self._batches(), settings, self._t0, on_fit=self.fit_max_steps)


@dataclass(frozen=True)
class _Batch:
    """A training batch on the device; ``depth_w`` is all ones and ``teacher`` ``None`` when the data has none."""

    hazy: torch.Tensor
    clear: torch.Tensor
    depth: torch.Tensor
    depth_w: torch.Tensor
    teacher: torch.Tensor | None
    teacher_w: torch.Tensor

    @classmethod
    def of(cls, batch: dict, device: torch.device) -> _Batch:
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


def _floats(**tensors: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in tensors.items()}


def _saved_init_tag(path: Path, default: str) -> str:
    """The ``init_tag`` a run saved in ``path`` (so a resumed run finds the same cached prior depths)."""
    if not path.is_file():
        return default
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return str((raw.get("extra") or {}).get("init_tag", default))


def _extra_of(ckpt: object) -> dict:
    """The ``extra`` dict saved with a checkpoint (``LoadedCheckpoint.raw["extra"]`` or an ``extra`` attribute)."""
    extra = getattr(ckpt, "extra", None)
    if extra is None:
        raw = getattr(ckpt, "raw", {}) or {}
        extra = raw.get("extra")
    if not isinstance(extra, dict) or "step" not in extra:
        raise ValueError("checkpoint has no training state in 'extra'; it cannot be resumed")
    return extra


if __name__ == "__main__":
    raise SystemExit(main())
