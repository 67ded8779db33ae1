"""Builds the distillation training set from a config: the mixture of :mod:`training.sources`.

The mixture (shares from the config, normalised): the real hazy pairs of ``data.root`` with the teacher's output as
an extra target; each ``distill.clear_sources`` entry hazed on the fly (RESIDE ranges of β and A); the real photos
of ``distill.real`` with the label the scorers chose among ``distill.real_teachers`` and its pseudo-depth. Every
teacher output and prior depth is computed before the first step, so the loop never waits on a teacher and a
resumed run sees exactly the same targets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from training.config import TrainConfig, resolve_path
from training.data import list_images
from training.sources import HazeSynthesis, PriorDepth, RealPhotos, SourceMix, TeacherPairs, clear_records
from training.teachers.labels import LabelCache

__all__ = ["build_distill_set", "real_photo_paths"]

logger = logging.getLogger(__name__)

PAIRS_TEACHER = "pairs-teacher"


def real_photo_paths(roots: list[str], exclude_names: list[str]) -> list[Path]:
    """The photos of the given flat folders, less the held-out stems; sorted, unique stems required."""
    held = set(exclude_names)
    paths = [p for root in roots for p in list_images(resolve_path(root), warn=False) if p.stem not in held]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError("two real photos share a file stem; rename one")
    return paths


def build_distill_set(
    cfg: TrainConfig, estimate_depth: Callable[[np.ndarray], np.ndarray] | None, estimator_tag: str
) -> Dataset:
    """The training mixture of a config with ``distill`` set.

    Args:
        cfg: The config.
        estimate_depth: Ψ as image -> depth, for clear photos without depth (see :class:`PriorDepth`).
        estimator_tag: Names that Ψ in the prior-depth cache (e.g. a digest of its weights).
    """
    dc, d = cfg.distill, cfg.data
    assert dc is not None
    cache_dir = resolve_path(dc.cache_dir)
    teachers = {PAIRS_TEACHER: resolve_path(dc.teacher), **{k: resolve_path(v) for k, v in dc.real_teachers.items()}}
    cache = LabelCache(cache_dir, teachers, workers=dc.workers)
    held_out = [*d.val_scenes, *d.test_scenes]
    sources: list[Dataset] = []
    weights: list[float] = []
    if dc.pairs_weight > 0:  # 0: data.root only validates (it may hold no training scenes)
        sources.append(
            TeacherPairs(
                resolve_path(d.root),
                cache,
                PAIRS_TEACHER,
                seed=cfg.seed + 10,
                exclude=held_out,
                teacher_weight=dc.gt_teacher_weight,
                scale_range=dc.scale_range,
                crop=d.crop,
                length=dc.length,
            )
        )
        weights.append(dc.pairs_weight)
    prior = PriorDepth(estimate_depth, cache_dir / "prior_depth", estimator_tag)
    for i, src in enumerate(dc.clear_sources):
        records = clear_records(resolve_path(src.root), src.layout, src.exclude)
        prior.fill(records)
        sources.append(
            HazeSynthesis(
                records,
                seed=cfg.seed + 20 + i,
                beta_range=d.beta_range,
                airlight_range=d.airlight_range,
                depth_scale=d.depth_scale,
                prior_depth=prior,
                scale_range=dc.scale_range,
                rotate=src.rotate,
                jitter=dc.jitter,
                crop=d.crop,
                length=dc.length,
            )
        )
        weights.append(src.weight)
        logger.info("source %s (%s): %d clear images, share %.2f", src.root, src.layout, len(records), src.weight)
    if dc.real is not None:
        paths = real_photo_paths(dc.real.roots, dc.real.exclude_names)
        cache.fill(paths, list(dc.real_teachers), dc.real.max_side)
        labels = [(p.stem, cache.real_label(p, dc.real.max_side, list(dc.real_teachers))) for p in paths]
        chosen = {name: sum(lab.teacher == name for _, lab in labels) for name in dc.real_teachers}
        logger.info("real photos: %d with teacher labels (chosen: %s)", len(labels), chosen)
        sources.append(
            RealPhotos(labels, crop=d.crop, seed=cfg.seed + 40, length=dc.length, depth_weight=dc.real.depth_weight)
        )
        weights.append(dc.real.weight)
    return SourceMix(sources, weights, dc.length, seed=cfg.seed + 2)
