"""Colabator fine-tuning of any of our networks (``dehaze finetune --config FILE --real DIR [--resume]``).

One step (see :mod:`training.colabator` for the method and its sources):

1. **Synthetic batch** from the RESIDE folder (its hazy pairs and haze synthesised from GT + depth, the existing
   data code), so the network keeps what it learned on synthetic haze.
2. **Real batch.** For each photo visited (:func:`~training.colabator.real_photos.visit_order`), the EMA teacher
   labels the whole working-size photo (no gradient). The label is scored by every scorer and offered to the
   :class:`~training.colabator.pool.LabelPool`, which keeps it only if it is better on every criterion than the
   stored one. Then one random crop (and flip) is cut, identically, from the photo, the pool's label, its trust
   map and (DCMPNet) its pseudo-depth; the student sees the crop after :func:`strong_augment`.
3. **Loss and update**: the family's terms (:mod:`training.colabator.networks`), one AdamW step on the student,
   then the EMA update of the teacher (:func:`ema_update`).

Before step 1 of a fresh run, the outputs of the configured LKD-Net teachers (``pool.teachers``; computed once and
cached on disk by :class:`training.teachers.labels.LabelCache`) are offered to the pool, in the config's order, so
the pool rule picks between them and the EMA teacher's later labels.

Randomness is a pure function of (seed, step): the photo order, crops, augmentations and the synthetic items. With
the torch random state, the optimiser, scheduler, pool, teacher and student saved in ``last.pt``, ``--resume``
continues exactly where the run stopped (a test checks bit-equality with an uninterrupted run).

Outputs in ``run_dir``: ``config.yaml``; ``log.jsonl`` (every ``log_every`` steps: mean loss terms, learning rate,
pool size, offers, replacements, the sources of the stored labels and their mean scores, elapsed seconds);
``last.pt``, written atomically in the starting checkpoint's family format with the **EMA teacher's** weights as
the model (the released code also ships its EMA weights, ``params_ema``), so it loads in ``dehaze run``, ``dehaze
evaluate`` and the service like any checkpoint of its family. ``extra`` holds the student, optimiser, scheduler,
pool, random state and step; ``dehaze release`` strips it for shipping.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.device import resolve_device
from training.augment import random_crop, random_flip
from training.colabator.config import FinetuneConfig
from training.colabator.ema import ema_update, make_teacher
from training.colabator.networks import load_finetune_net
from training.colabator.pool import LabelPool, PoolEntry
from training.colabator.priors import prior_label
from training.colabator.real_photos import RealPhoto, load_real_photos, visit_order
from training.colabator.strong_augment import strong_augment
from training.colabator.tone_repair import repair_tones
from training.colabator.trust import trust_grid, trust_map
from training.config import resolve_path
from training.data import HazeMix, PairedFolder, SyntheticHaze, from_chw, to_chw
from training.devices import describe_hardware
from training.loop import cosine_factor
from training.metrics import tone_shift
from training.pseudo_depth import pseudo_depth
from training.quality import NIQE_MIN_SIDE, FadeScorer, NiqeScorer, Scorer

__all__ = ["Finetuner", "build_scorers"]

logger = logging.getLogger(__name__)

EMA_SOURCE = "ema"


def build_scorers(names: Sequence[str], max_pixels: int) -> list[Scorer]:
    """The scorers named in a config (``fade``, ``niqe``), each with the pixel budget."""
    known: dict[str, Callable[[int], Scorer]] = {"fade": FadeScorer, "niqe": NiqeScorer}
    return [known[name](max_pixels) for name in names]


class Finetuner:
    """Builds student, EMA teacher, pool and data from a config and runs the Colabator loop.

    Args:
        cfg: The validated config.
        resume: Continue from ``run_dir/last.pt``.
        scorers: The pool's criteria (default: ``pool.scorers`` of the config).
        trust_scorers: The trust map's scorers (default: ``trust.scorers``, sharing instances with ``scorers``).
    """

    def __init__(
        self,
        cfg: FinetuneConfig,
        resume: bool = False,
        scorers: Sequence[Scorer] | None = None,
        trust_scorers: Sequence[Scorer] | None = None,
    ) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.run_dir = resolve_path(cfg.run_dir)
        self.student = load_finetune_net(resolve_path(cfg.init_from)).to(self.device)
        self.teacher = make_teacher(self.student)
        self.scorers = list(scorers) if scorers is not None else build_scorers(cfg.pool.scorers, cfg.pool.max_pixels)
        self.trust_scorers = list(trust_scorers) if trust_scorers is not None else self._trust_scorers()
        self.pool = LabelPool({s.name: s.higher_is_better for s in self.scorers})
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.student.parameters(), o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: cosine_factor(s, cfg.max_steps, o.lr, o.lr_min)
        )
        real = cfg.real
        self.photos = load_real_photos(real.roots, real.held_out(), real.max_side, real.max_photos, real.subset_seed)
        self.synthetic = self._synthetic_set()
        self._check_sizes()
        self.step = 0
        self.elapsed_before = 0.0
        self._prepare_run_dir(resume)
        logger.info(
            "colabator: %s %s from %s, %d real photos, %d synthetic items, scorers %s",
            self.student.family,
            self.student.variant,
            cfg.init_from,
            len(self.photos),
            len(self.synthetic),
            [s.name for s in self.scorers],
        )

    # ----- construction -----

    def _trust_scorers(self) -> list[Scorer]:
        by_name = {s.name: s for s in self.scorers}
        fresh = build_scorers([n for n in self.cfg.trust.scorers if n not in by_name], self.cfg.pool.max_pixels)
        by_name.update({s.name: s for s in fresh})
        return [by_name[n] for n in self.cfg.trust.scorers]

    def _synthetic_set(self) -> HazeMix:
        s = self.cfg.synthetic
        root = resolve_path(s.root)
        pairs = PairedFolder(root, crop=s.crop, seed=self.cfg.seed, exclude=s.exclude, augment=True)
        hazed = SyntheticHaze(
            root,
            crop=s.crop,
            seed=self.cfg.seed + 1,
            length=len(pairs),
            exclude=s.exclude,
            beta_range=s.beta_range,
            airlight_range=s.airlight_range,
            depth_scale=s.depth_scale,
        )
        if self.student.needs_depth and not pairs.has_depth:
            raise ValueError(f"DCMPNet fine-tuning needs depth maps in {root / 'depth'} (Ψ's synthetic target)")
        return HazeMix(pairs, hazed, s.synthetic_fraction, seed=self.cfg.seed + 2)

    def _check_sizes(self) -> None:
        minimum = self.student.min_size
        for name, crop in (("real.crop", self.cfg.real.crop), ("synthetic.crop", self.cfg.synthetic.crop)):
            if crop < minimum:
                raise ValueError(f"{name} {crop} is smaller than {self.student.variant}'s minimum {minimum}")
        if any(s.name == "niqe" for s in self.scorers):
            small = [p.name for p in self.photos if min(p.image.shape[:2]) < NIQE_MIN_SIDE]
            if small:
                raise ValueError(f"NIQE needs {NIQE_MIN_SIDE} px on each side; too small at real.max_side: {small}")

    def _prepare_run_dir(self, resume: bool) -> None:
        last = self.run_dir / "last.pt"
        if resume:
            if not last.is_file():
                raise FileNotFoundError(f"--resume given but {last} does not exist")
            self._load(last)
        elif last.exists():
            raise FileExistsError(f"{last} exists: pass --resume to continue, or choose another run_dir")
        else:
            self._seed_pool()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(self.cfg.to_yaml())

    # ----- the label pool -----

    def _seed_pool(self) -> None:
        """Offers candidate labels of every photo to the pool before step 1 (fresh runs only).

        In this order: the EMA teacher's (``pool.seed_with_ema``), each configured LKD-Net teacher's, each prior's;
        the first one of a photo is stored, and the pool rule decides between it and the later ones.
        """
        if self.cfg.pool.seed_with_ema:
            for photo in self.photos:
                self._offer(photo, self.teacher_label(photo), EMA_SOURCE)
        teachers = {name: resolve_path(p) for name, p in self.cfg.pool.teachers.items()}
        if teachers:
            from training.teachers.labels import LabelCache

            cache = LabelCache(resolve_path(self.cfg.pool.cache_dir), teachers, workers=self.cfg.pool.workers)
            cache.fill([p.path for p in self.photos], list(teachers), self.cfg.real.max_side)
            for photo in self.photos:
                for name in teachers:
                    self._offer(photo, cache.dehazed(photo.path, name, self.cfg.real.max_side), name)
        for photo in self.photos:
            for prior in self.cfg.pool.priors:
                self._offer(photo, prior_label(photo.image, prior), prior)
        if self.pool.entries:
            logger.info("pool seeded: %s", self.pool.sources())

    def score(self, label: np.ndarray) -> dict[str, float]:
        """Every criterion's score of an H×W×3 label."""
        return {s.name: float(s(label)) for s in self.scorers}

    def _offer(self, photo: RealPhoto, label: np.ndarray, source: str) -> bool:
        """Scores a candidate label of a photo and offers it to the pool; returns whether it was stored."""
        if label.shape != photo.image.shape:
            raise ValueError(f"{source}'s label of {photo.name} is {label.shape}, the photo {photo.image.shape}")
        if (repair := self.cfg.pool.tone_repair) is not None:
            label = repair_tones(photo.image, label, repair.shadow, repair.strength, repair.colour)
        if photo.name in self.pool.entries and not self.natural_tones(photo, label):
            self.pool.offers += 1
            return False
        scores = self.score(label)
        return self.pool.offer(photo.name, scores, lambda: self._entry(photo, label, scores, source))

    def natural_tones(self, photo: RealPhoto, label: np.ndarray) -> bool:
        """Whether a label keeps the tone limits of ``pool`` (crushed shadows, colour shift against the photo).

        Checked before scoring and only against a stored label: the first label of a photo is always kept, so
        every photo has a target.
        """
        cfg = self.cfg.pool
        if cfg.max_crushed is None and cfg.max_color_shift is None:
            return True
        tone = tone_shift(photo.image, label)
        if cfg.max_crushed is not None and tone.crushed > cfg.max_crushed:
            return False
        shift = max(abs(tone.rg_shift), abs(tone.bg_shift))
        return cfg.max_color_shift is None or shift <= cfg.max_color_shift

    def _entry(self, photo: RealPhoto, label: np.ndarray, scores: dict[str, float], source: str) -> PoolEntry:
        t = self.cfg.trust
        grid = trust_grid(label, self.trust_scorers, t.block, t.half, t.floor)
        depth = conf = None
        if self.student.needs_depth:
            pd = pseudo_depth(to_chw(photo.image)[None], to_chw(label)[None])
            depth, conf = pd.depth[0].half(), pd.confidence[0].half()
        return PoolEntry(to_chw(label).half(), scores, source, self.step, torch.from_numpy(grid), depth, conf)

    @torch.no_grad()
    def teacher_label(self, photo: RealPhoto) -> np.ndarray:
        """The EMA teacher's label of a whole working-size photo, H×W×3 in [0, 1]."""
        out = self.teacher.infer(to_chw(photo.image)[None].to(self.device))
        return from_chw(out[0])

    # ----- batches -----

    def _synthetic_batch(self, step: int) -> dict[str, torch.Tensor]:
        n, b = len(self.synthetic), self.cfg.synthetic.batch_size
        items = []
        for k in range(step * b, (step + 1) * b):
            epoch, pos = divmod(k, n)
            self.synthetic.set_epoch(epoch)
            order = np.random.default_rng((self.cfg.seed, 5, epoch)).permutation(n)
            items.append(self.synthetic[int(order[pos])])
        keys = ["hazy", "clear"] + (["depth"] if self.student.needs_depth else [])
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in keys}

    def _real_item(self, photo: RealPhoto, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        entry = self.pool.get(photo.name)
        if entry is None:  # only a first label with a NaN score is refused
            raise RuntimeError(f"no label for {photo.name}: its first candidate had an undefined (NaN) score")
        h, w = photo.image.shape[:2]
        arrays = [photo.image, from_chw(entry.label), from_chw(trust_map(entry.trust, h, w))]
        if entry.depth is not None and entry.confidence is not None:
            arrays += [from_chw(entry.depth), from_chw(entry.confidence)]
        crops = random_crop(arrays, self.cfg.real.crop, rng)
        if self.cfg.strong.flip:
            crops = random_flip(crops, rng)
        item = {"strong": to_chw(strong_augment(crops[0], rng, self.cfg.strong)), "label": to_chw(crops[1])}
        item["trust"] = to_chw(crops[2])
        if len(crops) == 5:
            item["depth"], item["conf"] = to_chw(crops[3]), to_chw(crops[4])
        return item

    def _real_batch(self, step: int) -> dict[str, torch.Tensor]:
        """Offers the teacher's labels of this step's photos to the pool, then cuts and augments their crops."""
        order = visit_order(len(self.photos), self.cfg.seed, step, self.cfg.real.batch_size)
        items = []
        for i, idx in enumerate(order):
            photo = self.photos[idx]
            self._offer(photo, self.teacher_label(photo), EMA_SOURCE)
            items.append(self._real_item(photo, np.random.default_rng((self.cfg.seed, 13, step, i))))
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in items[0]}

    # ----- one step -----

    def train_step(self) -> dict[str, float]:
        """One Colabator step: pool offers, the student's update, the teacher's EMA update; returns the losses."""
        synthetic = self._synthetic_batch(self.step)
        real = self._real_batch(self.step)
        self.student.train()
        terms = self.student.losses(synthetic, real, self.cfg.loss)
        total = torch.stack(list(terms.values())).sum()
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        ema_update(self.teacher, self.student, self.cfg.ema_decay)
        self.step += 1
        losses = {k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())}
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {losses}")
        return losses

    # ----- checkpoints -----

    def _extra(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "student": self.student.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "pool": self.pool.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "elapsed": self.elapsed_before + (time.monotonic() - self._t0),
            "config": self.cfg.model_dump(mode="json"),
        }

    def save(self) -> Path:
        """Writes ``run_dir/last.pt``: the EMA teacher as the model, the training state in ``extra``."""
        metadata = {
            "step": self.step,
            "method": "colabator",
            "init_from": str(self.cfg.init_from),
            "real_photos": len(self.photos),
            "real_roots": [str(r) for r in self.cfg.real.roots],
            "synthetic_root": str(self.cfg.synthetic.root),
            "ema_decay": self.cfg.ema_decay,
            "scorers": [s.name for s in self.scorers],
            "weights": "ema-teacher",
            "hardware": describe_hardware(self.device),
        }
        return self.teacher.save(self.run_dir / "last.pt", metadata, self._extra())

    def _load(self, path: Path) -> None:
        from model.checkpoint import read_weights

        raw = read_weights(path, self.device)
        extra = raw.get("extra") or {}
        if "student" not in extra or "pool" not in extra:
            raise ValueError(f"{path} holds no Colabator training state; it cannot be resumed")
        saved = load_finetune_net(path)
        if (saved.family, saved.variant) != (self.student.family, self.student.variant):
            raise ValueError(f"{path} holds {saved.variant}, init_from {self.student.variant}")
        self.teacher.load_state_dict(saved.state_dict())
        self.student.load_state_dict(extra["student"])
        self.opt.load_state_dict(extra["opt"])
        self.sched.load_state_dict(extra["sched"])
        self.pool.load_state_dict(extra["pool"])
        torch.set_rng_state(extra["torch_rng"].cpu())
        self.step = int(extra["step"])
        self.elapsed_before = float(extra["elapsed"])
        logger.info("resumed from %s at step %d (pool of %d labels)", path, self.step, len(self.pool))

    # ----- the loop -----

    def _log(self, sums: dict[str, float], count: int) -> None:
        record = {
            "step": self.step,
            "losses": {k: v / max(count, 1) for k, v in sums.items()},
            "lr": self.sched.get_last_lr()[0],
            "pool": {
                "size": len(self.pool),
                "offers": self.pool.offers,
                "replacements": self.pool.replacements,
                "sources": self.pool.sources(),
                "mean_scores": self.pool.mean_scores(),
            },
            "elapsed": round(self.elapsed_before + time.monotonic() - self._t0, 3),
        }
        with (self.run_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("step %d: %s pool %s", self.step, record["losses"], record["pool"])

    def train(self, stop_at: int | None = None) -> dict[str, float]:
        """Runs to ``max_steps`` (or ``max_wall_seconds``), logging and saving as configured.

        Args:
            stop_at: Stop (log and save) at this step instead, as an interrupted run would; the schedule still
                spans ``max_steps``, so ``--resume`` continues the same run.

        Returns:
            The last step's losses (empty when there was nothing left to do).
        """
        self._t0 = time.monotonic()
        cfg = self.cfg
        end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        losses: dict[str, float] = {}
        if self.step >= end:
            logger.info("already at step %d >= %d: nothing to do", self.step, end)
            return losses
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
        try:
            while self.step < end:
                losses = self.train_step()
                sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
                count += 1
                bar.update(1)
                out_of_time = cfg.max_wall_seconds is not None and time.monotonic() - self._t0 >= cfg.max_wall_seconds
                done = self.step >= end or out_of_time
                if self.step % cfg.log_every == 0 or done:
                    self._log(sums, count)
                    sums, count = {}, 0
                if self.step % cfg.save_every == 0 or done:
                    self.save()
                if out_of_time:
                    logger.info("max_wall_seconds reached at step %d", self.step)
                    break
        finally:
            bar.close()
        return losses
