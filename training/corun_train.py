"""``dehaze train --config FILE`` for a CORUN variant: the paper's pre-training on synthetic haze.

Fang et al., NeurIPS 2024 (CORUN-Colabator), pre-training stage as the released code runs it (CORUN.md §2, §4):
one network, AdamW, each step

    images, transmissions = CORUN.forward_stages(P)      # J_1..J_K and T̂_1..T̂_K
    loss = L1(J_K, J) [+ stage L1] + 0.01·L1(J_K·T̂_K + 1 − T̂_K, P) [+ 0.2·contrastive VGG]

on pairs made on the fly from clear images with true depth by :mod:`training.corun_haze` (gamma, noise, haze with
random β and A, JPEG; :mod:`training.corun_data`), validated by PSNR/SSIM on real SOTS pairs of held-out scenes.
With ``optim.ema_decay`` set, an exponential moving average of the weights (the released ``params_ema``) is what
is validated and saved as the checkpoint's network, as the released inference uses the EMA weights.

The loop, the data order, the run folder and ``--resume`` are :mod:`training.loop`'s, shared with DCMPNet's
:class:`training.trainer.Trainer`. Outputs in ``run_dir``: ``config.yaml``, ``log.jsonl`` (per validation: step,
psnr, ssim, mean training losses since the previous one, lr, elapsed seconds), ``last.pt`` and ``best.pt`` (by val
PSNR) in our CORUN checkpoint format (:func:`model.corun_checkpoint.save_corun_checkpoint`; the service, ``dehaze
evaluate`` and ``dehaze export`` load them as they are), with the trained weights (when they differ from the
shipped EMA), optimiser, scheduler, scaler, torch random state, step and config in ``extra``. ``--resume``
continues from ``last.pt`` exactly: the same learning-rate curve, the same remaining batches in the same order.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from model.corun import CORUN, create_corun
from model.device import resolve_device
from training.config import resolve_path
from training.corun_config import CorunTrainConfig, load_corun_config
from training.corun_data import build_corun_mixture
from training.corun_losses import pretrain_losses
from training.data import PairedFolder
from training.devices import amp_dtype, autocast, describe_hardware
from training.loop import (
    LoopSettings,
    RunningMeans,
    batches,
    cosine_factor,
    dataset_len,
    log_validation,
    prepare_run_dir,
    run_steps,
    save_validated,
)
from training.losses import ContrastivePerceptualLoss
from training.metrics import mean_finite_psnr, psnr, ssim

__all__ = ["CorunTrainer", "run_corun"]

logger = logging.getLogger(__name__)


def run_corun(config: str | Path, overrides: dict | None = None, resume: bool = False) -> int:
    """Runs a CORUN training from a YAML file (plus ``--set`` overrides); returns the exit code."""
    CorunTrainer(load_corun_config(config, overrides), resume=resume).train()
    return 0


def _perceptual(path: str | None, weight: float, device: torch.device) -> ContrastivePerceptualLoss | None:
    if path is None or weight == 0:
        logger.info("perceptual (VGG19 contrastive) term OFF: no loss.vgg_weights file configured")
        return None
    from training.vgg import VGG19Features

    extractor = VGG19Features.from_file(resolve_path(path)).to(device).eval()
    logger.info("perceptual (VGG19 contrastive) term ON, weights from %s", path)
    return ContrastivePerceptualLoss(extractor)


class CorunTrainer:
    """Builds CORUN, its data and optimiser from a config and runs the pre-training loop.

    Args:
        cfg: The validated config.
        resume: Continue from ``run_dir/last.pt``.
    """

    def __init__(self, cfg: CorunTrainConfig, resume: bool = False) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.amp = amp_dtype(cfg.optim.amp, self.device)
        self.run_dir = resolve_path(cfg.run_dir)
        self.net: CORUN = create_corun(cfg.variant).to(self.device)
        if cfg.init_from is not None and not resume:
            self._init_weights(resolve_path(cfg.init_from))
        self.ema: CORUN | None = None
        if cfg.optim.ema_decay is not None:
            self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.net.parameters(), o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.total_steps = cfg.max_steps  # the schedule's length; fit_steps_to_wall may re-fit it once
        self.steps_fitted = False
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: cosine_factor(s, self.total_steps, o.lr, o.lr_min)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.perceptual = _perceptual(cfg.loss.vgg_weights, cfg.loss.perceptual_weight, self.device)
        self.loss_weights = cfg.loss.weights()
        self.train_set, self.val_set = self._datasets()
        self.step = 0
        self.best_psnr = -math.inf
        self.elapsed_before = 0.0
        self._t0 = time.monotonic()
        prepare_run_dir(self.run_dir, lambda: self.cfg.to_yaml(), resume, self._load)

    # ----- construction helpers -----

    @property
    def shipped(self) -> CORUN:
        """The network that is validated and saved: the EMA when there is one, else the trained weights."""
        return self.ema if self.ema is not None else self.net

    def fit_max_steps(self, max_steps: int) -> None:
        """Sets the run's length (and so the cosine schedule's) to ``max_steps``, once (``fit_steps_to_wall``)."""
        logger.info("fit_steps_to_wall: max_steps %d -> %d at step %d", self.total_steps, max_steps, self.step)
        self.total_steps, self.steps_fitted = max_steps, True
        self.cfg = self.cfg.model_copy(update={"max_steps": max_steps})
        (self.run_dir / "config.yaml").write_text(self.cfg.to_yaml())

    def _init_weights(self, path: Path) -> None:
        from model.corun_checkpoint import load_corun_checkpoint

        loaded = load_corun_checkpoint(path)
        if loaded.variant != self.cfg.variant:
            raise ValueError(f"init_from {path} holds variant {loaded.variant!r}, config asks for {self.cfg.variant!r}")
        self.net.load_state_dict(loaded.net.state_dict())
        logger.info("initialised %s from %s", self.cfg.variant, path)

    def _datasets(self) -> tuple[Dataset, Dataset]:
        d = self.cfg.data
        val_root = resolve_path(d.val_root)
        held_out = [*d.val_scenes, *d.test_scenes]
        sources = []
        for s in d.sources:
            root = resolve_path(s.root)
            exclude = [*s.exclude, *(held_out if s.layout == "reside" and root == val_root else [])]
            sources.append((root, s.layout, s.weight, exclude))
        train = build_corun_mixture(sources, d.crop, self.cfg.seed, d.length, d.haze.recipe(), d.scale_range)
        val: Dataset = PairedFolder(val_root, crop=d.val_crop, scenes=d.val_scenes, augment=False)
        if d.val_max_images is not None and d.val_max_images < dataset_len(val):
            idx = np.linspace(0, dataset_len(val) - 1, d.val_max_images).round().astype(int)
            val = Subset(val, sorted(set(idx.tolist())))
        n_val = dataset_len(val)
        logger.info(
            "data: %d synthetic items/epoch from %d folder(s), %d validation images", len(train), len(sources), n_val
        )
        return train, val

    # ----- checkpoints -----

    def _extra(self) -> dict:
        extra = {
            "step": self.step,
            "best_psnr": self.best_psnr,
            "elapsed": self.elapsed_before + (time.monotonic() - self._t0),
            "config": self.cfg.model_dump(mode="json"),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "max_steps": self.total_steps,
            "steps_fitted": self.steps_fitted,
        }
        if self.ema is not None:
            extra["trained"] = self.net.state_dict()  # the checkpoint's own network is the EMA
        return extra

    def _save(self, name: str, metrics: dict) -> None:
        from model.corun_checkpoint import save_corun_checkpoint

        d = self.cfg.data
        metadata = {
            "step": self.step,
            "stage": "pretrain",
            "weights": "ema" if self.ema is not None else "trained",
            "data": [f"{s.root} ({s.layout}, weight {s.weight})" for s in d.sources],
            "val_root": d.val_root,
            "val_scenes": list(d.val_scenes),
            "test_scenes": list(d.test_scenes),
            "hardware": describe_hardware(self.device),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
        }
        save_corun_checkpoint(self.run_dir / name, self.shipped, self.cfg.variant, metadata, extra=self._extra())

    def _load(self, path: Path) -> None:
        from model.corun_checkpoint import load_corun_checkpoint

        loaded = load_corun_checkpoint(path, map_location=self.device)
        extra = loaded.raw.get("extra")
        if not isinstance(extra, dict) or "step" not in extra:
            raise ValueError(f"{path} has no training state in 'extra'; it cannot be resumed")
        if loaded.variant != self.cfg.variant:
            raise ValueError(f"{path} holds variant {loaded.variant!r}, config asks for {self.cfg.variant!r}")
        if self.ema is not None:
            if "trained" not in extra:
                raise ValueError(f"{path} was trained without EMA; set optim.ema_decay: null to resume it")
            self.ema.load_state_dict(loaded.net.state_dict())
            self.net.load_state_dict(extra["trained"])
        else:
            self.net.load_state_dict(extra.get("trained", loaded.net.state_dict()))
        self.opt.load_state_dict(extra["opt"])
        self.sched.load_state_dict(extra["sched"])
        self.scaler.load_state_dict(extra["scaler"])
        self.step = int(extra["step"])
        self.best_psnr = float(extra["best_psnr"])
        self.elapsed_before = float(extra["elapsed"])
        if extra.get("steps_fitted"):  # a fitted run keeps its fitted length (and schedule) on resume
            self.fit_max_steps(int(extra["max_steps"]))
        torch.set_rng_state(extra["torch_rng"])
        logger.info("resumed from %s at step %d (best val PSNR %.3f)", path, self.step, self.best_psnr)

    # ----- the loop -----

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None or self.cfg.optim.ema_decay is None:
            return
        weight = 1.0 - self.cfg.optim.ema_decay
        for e, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            e.lerp_(p.detach(), weight)
        for eb, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            eb.copy_(b)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on a batch; returns the weighted loss terms and their total.

        Raises:
            FloatingPointError: A non-finite loss.
        """
        self.net.train()
        hazy = batch["hazy"].to(self.device, non_blocking=True)
        clear = batch["clear"].to(self.device, non_blocking=True)
        with autocast(self.amp, self.device):
            images, transmissions = self.net.forward_stages(hazy)
        terms = pretrain_losses(
            [j.float() for j in images],
            [t.float() for t in transmissions],
            clear,
            hazy,
            self.loss_weights,
            self.perceptual,
        )
        total = torch.stack(list(terms.values())).sum()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.opt)
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self._update_ema()
        self.step += 1
        losses = {k: float(v.detach()) for k, v in {**terms, "total": total}.items()}
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {losses}")
        return losses

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM of the shipped network's clamped output on the validation pairs (batch 1, full or centre crop)."""
        from model.corun_pipeline import CorunPipeline

        net = self.shipped
        was_training = net.training
        pipeline = CorunPipeline(net).eval()
        ps, ss = [], []
        try:
            for i in range(dataset_len(self.val_set)):
                item = self.val_set[i]
                with autocast(self.amp, self.device):
                    out, _ = pipeline(item["hazy"][None].to(self.device))
                ps.append(psnr(out.float(), item["clear"]))
                ss.append(ssim(out.float(), item["clear"]))
        finally:
            net.train(was_training)
        return {"psnr": mean_finite_psnr(ps), "ssim": float(np.mean(ss))}

    def _validate_and_save(self, running: RunningMeans) -> None:
        metrics = self.validate()
        elapsed = self.elapsed_before + (time.monotonic() - self._t0)
        log_validation(self.run_dir, self.step, metrics, running, {"lr": float(self.sched.get_last_lr()[0])}, elapsed)
        self.best_psnr = save_validated(self._save, metrics, self.best_psnr)

    def train(self) -> dict[str, float]:
        """Runs until ``max_steps`` or ``max_wall_seconds``; validates/saves every ``val_every`` and at the end.

        Returns:
            The last step's losses (empty when there was nothing left to do).
        """
        self._t0 = time.monotonic()
        cfg, d = self.cfg, self.cfg.data
        source = batches(self.train_set, self.step, d.batch_size, cfg.seed, d.num_workers, self.device.type == "cuda")
        fit = cfg.fit_steps_to_wall and not self.steps_fitted
        settings = LoopSettings(
            self.total_steps, cfg.val_every, d.batch_size, cfg.progress, cfg.max_wall_seconds, fit_to_wall=fit
        )
        return run_steps(self, source, settings, self._t0, on_fit=self.fit_max_steps)
