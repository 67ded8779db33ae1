"""DCMPNet's trainer: set-up from a config, checkpoints, validation and the step loop (``dehaze train``).

The iteration itself, in the paper's alternating or the released code's joint formulation, is
:class:`training.dual_task.DualTaskStep`; the loop, data order and run folder are :mod:`training.loop`'s.

Outputs in ``run_dir``: ``config.yaml``, ``log.jsonl`` (one line per validation: step, psnr, ssim, depth metrics,
mean training losses since the previous validation, lr, elapsed seconds), ``last.pt`` and ``best.pt`` (by val
PSNR) written atomically by ``model.checkpoint.save_checkpoint`` with optimiser, scheduler, scaler and perceptron
states, step and config in ``extra``. ``--resume`` continues from ``last.pt`` exactly: the same learning-rate curve,
the same remaining batches of the current epoch in the same order (the order of an epoch is a pure function of seed
and epoch, and a sample of its index), and the saved torch random state.

Departures from the released code (DCMPNET.md §3, §7): alternating optimisation by default; M_u is the dataset's
true relative depth, not RA-Depth disparity; Eq. 5 uses Φ's own U-Net (theirs had zero gradient); the perceptron's
map has mean 1 (theirs 1/(H·W)); the cosine schedule is per step, not per epoch; validation uses held-out training
scenes, never the test split; the perceptual VGG term is on only when a weights file is configured.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from model.device import resolve_device
from training.config import TrainConfig, resolve_path
from training.data import HazeMix, PairedFolder, SyntheticHaze
from training.devices import amp_dtype, autocast, describe_hardware
from training.dual_task import Batch, DualTaskStep
from training.loop import (
    LoopSettings,
    RunningMeans,
    batches,
    cosine_factor,
    dataset_len,
    epoch_order,
    log_validation,
    prepare_run_dir,
    run_steps,
    save_validated,
)
from training.losses import ContrastivePerceptualLoss
from training.metrics import depth_errors, mean_finite_psnr, psnr, ssim
from training.perceptron import DifferencePerceptron

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


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
        self.device = resolve_device(cfg.device)
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
        self.opt_phi = torch.optim.Adam(self._phi_groups(), o.lr_phi, betas=o.betas, weight_decay=o.weight_decay)
        self.total_steps = cfg.max_steps  # the schedule's length; fit_steps_to_wall may re-fit it once
        self.steps_fitted = False
        self.sched_psi = self._scheduler(self.opt_psi, o.lr_psi)
        self.sched_phi = self._scheduler(self.opt_phi, o.lr_phi)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.perceptual = self._perceptual()
        self.dual_task = DualTaskStep(
            self.phi,
            self.psi,
            self.perc_d,
            self.perc_e,
            self.opt_phi,
            self.opt_psi,
            self.scaler,
            cfg.loss,
            o.grad_clip,
            self.amp,
            self.device,
            self.perceptual,
            self.internal_depth,
        )
        self._init_tag = "random-init"  # names the Ψ that made the cached prior depths (see training.sources)
        if resume:
            self._restore_state_if_gone()
            self._init_tag = _saved_init_tag(self.run_dir / "last.pt", self._init_tag)
        else:
            if cfg.init_from is not None:
                self._init_weights(resolve_path(cfg.init_from))
            if cfg.warm_start is not None:
                self._warm_start()
        self.train_set, self.val_set = self._datasets()
        self.step = 0
        self.best_psnr = -math.inf
        self.elapsed_before = 0.0
        prepare_run_dir(self.run_dir, lambda: self.cfg.to_yaml(), resume, self._load)
        if cfg.formulation == "depth_only":  # Φ is frozen: what it weighs by zero need not be computed
            self.phi.prune_unused_inputs()

    # ----- construction helpers -----

    def _phi_groups(self) -> list[dict]:
        """Φ's parameter groups: the backbone at ``lr_backbone`` (when set); the rest and the perceptron at ``lr_phi``.

        With one learning rate there is one group."""
        from model.warm_start import backbone_parameter_names

        o = self.cfg.optim
        rest = [*self.perc_e.parameters()]
        if o.lr_backbone is None:
            return [{"params": [*self.phi.parameters(), *rest]}]
        names = backbone_parameter_names(self.phi)
        backbone = [p for n, p in self.phi.named_parameters() if n in names]
        rest = [p for n, p in self.phi.named_parameters() if n not in names] + rest
        return [{"params": backbone, "lr": o.lr_backbone}, {"params": rest}]

    def _restore_state_if_gone(self) -> None:
        """A resumed run whose folder has no ``last.pt`` (a new machine) starts from the config's resume state."""
        from training.resume_state import unpack

        state = self.cfg.resume_state
        if state is not None and not (self.run_dir / "last.pt").exists() and resolve_path(state).is_file():
            unpack(resolve_path(state), self.run_dir)

    def _warm_start(self) -> None:
        from model.checkpoint import load_checkpoint
        from model.warm_start import warm_start_phi

        ws = self.cfg.warm_start
        assert ws is not None
        path = resolve_path(ws.dehazeformer)
        warm_start_phi(self.phi, path)
        tag = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
        if ws.psi_from is not None:
            psi_path = resolve_path(ws.psi_from)
            self.psi.load_state_dict(load_checkpoint(psi_path).psi.state_dict())
            tag += "-" + hashlib.sha1(psi_path.read_bytes()).hexdigest()[:12]
            logger.info("Ψ initialised from %s", psi_path)
        self._init_tag = tag

    def _scheduler(self, opt: torch.optim.Optimizer, lr0: float) -> torch.optim.lr_scheduler.LambdaLR:
        lr_min = self.cfg.optim.lr_min
        warmup = self.cfg.optim.warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, self.total_steps, lr0, lr_min, warmup))

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
            logger.info(
                "data: distillation mixture of %d items/epoch, %d validation images",
                dataset_len(train_set),
                dataset_len(val),
            )
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
        if dataset_len(train) < d.batch_size:
            raise ValueError(f"{dataset_len(train)} training items is fewer than batch_size={d.batch_size}")
        logger.info("data: %d training items (%s), %d validation images", dataset_len(train), root, dataset_len(val))
        return train, val

    def _val_set(self, root: Path) -> Dataset:
        d = self.cfg.data
        val: Dataset = PairedFolder(root, crop=d.val_crop, scenes=d.val_scenes, augment=False)
        if d.val_max_images is not None and d.val_max_images < dataset_len(val):
            idx = np.linspace(0, dataset_len(val) - 1, d.val_max_images).round().astype(int)
            val = Subset(val, sorted(set(idx.tolist())))
        return val

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
            **self._warm_start_record(),
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

    def _warm_start_record(self) -> dict[str, str]:
        """What the run started from and the licence its weights inherit (empty without a warm start)."""
        ws = self.cfg.warm_start
        if ws is None:
            return {}
        record = {"warm_start": Path(ws.dehazeformer).name, "licence": ws.licence}
        if ws.psi_from is not None:
            record["psi_from"] = Path(ws.psi_from).name
        return record

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
        logger.info("resumed from %s at step %d (best validation score %.3f)", path, self.step, self.best_psnr)

    # ----- the loop -----

    def epoch_order(self, epoch: int) -> list[int]:
        """The order in which epoch ``epoch`` visits the training items: a pure function of seed and epoch."""
        return epoch_order(self.cfg.seed, dataset_len(self.train_set), epoch)

    def _batches(self) -> Iterator[dict]:
        """Batches from the current step on; after a resume, the rest of the interrupted epoch comes first."""
        d = self.cfg.data
        pin = self.device.type == "cuda"
        return batches(self.train_set, self.step, d.batch_size, self.cfg.seed, d.num_workers, pin)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One iteration of the configured formulation on a batch; returns the loss values."""
        losses = self.dual_task.run(self.cfg.formulation, Batch.of(batch, self.device))
        if self.cfg.formulation != "depth_only":  # Φ's optimiser never steps there
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
        for i in range(dataset_len(self.val_set)):
            item = self.val_set[i]
            with autocast(self.amp, self.device):
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

    def _validate_and_save(self, running: RunningMeans) -> None:
        metrics = self.validate()
        phi_lrs = self.sched_phi.get_last_lr()  # [backbone, rest] when the backbone has its own rate
        lrs = {"lr_phi": float(phi_lrs[-1]), "lr_psi": float(self.sched_psi.get_last_lr()[0])}
        if len(phi_lrs) > 1:
            lrs["lr_backbone"] = float(phi_lrs[0])
        elapsed = self.elapsed_before + (time.monotonic() - self._t0)
        log_validation(self.run_dir, self.step, metrics, running, lrs, elapsed)
        # A depth-only stage leaves Φ (and so PSNR) unchanged: its best checkpoint is Ψ's best depth.
        key = "depth_delta1" if self.cfg.formulation == "depth_only" else "psnr"
        self.best_psnr = save_validated(self._save, metrics, self.best_psnr, key)
        if self.cfg.resume_state is not None:
            from training.resume_state import pack

            pack(self.run_dir / "last.pt", resolve_path(self.cfg.resume_state))

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
