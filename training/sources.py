"""Training sources for distillation: clear images with depth in several layouts, hazed on the fly, and real
photos with teacher labels, mixed in set proportions.

Layouts of clear images (each gives :class:`ClearRecord` s):
    ``reside``: ``root/GT/<scene>.*`` with ``root/depth/<scene>.png`` (16-bit, 0 = near), e.g. SOTS-indoor.
    ``nyu``: ``root/<scene>/<frame>.jpg`` with ``<frame>.png`` (8-bit, larger = farther, NYU Depth v2 as
        monocular-depth projects publish it); a border of ``NYU_BORDER`` px (the camera's invalid margin) is cut.
    ``flat``: any images under ``root`` (recursively), without depth (e.g. BSDS500); their depth comes from a
        :class:`PriorDepth` and is never used to supervise Ψ (its weight is 0).

Every item is a dict of float32 tensors: ``hazy``, ``clear`` (the target: ground truth or a teacher label),
``teacher`` (a teacher's output used as an extra target) with ``teacher_w`` (its weight, shape [1]), ``depth``
and ``depth_w`` (per-pixel weight of the depth target), and ``name``. Item ``i`` of any source uses record
``i % len(records)`` and the generator ``(seed, epoch, i)``, so a source can be indexed as far as a mixture needs
and one index always gives one sample.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from training.augment import colour_jitter, random_flip, random_rot90, random_scaled_crop
from training.data import (
    DEFAULT_DEPTH_SCALE,
    IMAGE_EXTENSIONS,
    _by_stem,
    _Epoched,
    list_images,
    load_depth,
    load_rgb,
    scan_pairs,
    synthesize,
)
from training.teachers.labels import LabelCache, RealLabel

__all__ = [
    "NYU_BORDER",
    "ClearRecord",
    "HazeSynthesis",
    "PriorDepth",
    "RealPhotos",
    "SourceMix",
    "TeacherPairs",
    "clear_records",
    "normalise_depth",
]

logger = logging.getLogger(__name__)

NYU_BORDER = 8
Layout = Literal["reside", "nyu", "flat"]


@dataclass(frozen=True)
class ClearRecord:
    """A clear image and, where it exists, its true depth file."""

    name: str
    image: Path
    depth: Path | None
    layout: Layout


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def clear_records(root: str | Path, layout: Layout, exclude: Sequence[str] = ()) -> list[ClearRecord]:
    """The clear images of a folder in one of the layouts (see the module docstring).

    Args:
        root: The folder.
        layout: ``reside``, ``nyu`` or ``flat``.
        exclude: Scenes to leave out (RESIDE scene ids or NYU scene folder names).

    Raises:
        FileNotFoundError: The folder is missing. ValueError: it holds no usable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    dropped = set(map(str, exclude))
    if layout == "reside":
        records = _reside_clear(root, dropped)
    elif layout == "nyu":
        records = [
            ClearRecord(f"{jpg.parent.name}/{jpg.stem}", jpg, jpg.with_suffix(".png"), layout)
            for jpg in sorted(root.glob("*/*.jpg"))
            if jpg.parent.name not in dropped and jpg.with_suffix(".png").is_file()
        ]
    elif layout == "flat":
        records = [ClearRecord(p.stem, p, None, layout) for p in _images_under(root)]
    else:
        raise ValueError(f"unknown layout {layout!r}; choices: reside, nyu, flat")
    if not records:
        raise ValueError(f"no {layout} clear images in {root}")
    return records


def _reside_clear(root: Path, dropped: set[str]) -> list[ClearRecord]:
    """The GT images of a RESIDE-layout folder with their depth maps where ``depth/`` has them (no hazy/ needed)."""
    if not (root / "GT").is_dir():
        raise FileNotFoundError(f"{root} is not a RESIDE-layout folder: missing {root / 'GT'}")
    clear = _by_stem(list_images(root / "GT"), root / "GT")
    depth = _by_stem(list_images(root / "depth"), root / "depth") if (root / "depth").is_dir() else {}
    return [ClearRecord(s, p, depth.get(s), "reside") for s, p in sorted(clear.items()) if s not in dropped]


def normalise_depth(depth: np.ndarray) -> np.ndarray:
    """Scales a depth map (larger = farther, 0 = at the camera) to [0, 1] by its maximum, keeping proportions."""
    top = float(depth.max())
    return (depth / top if top > 0 else depth).astype(np.float32)


def _load_clear(rec: ClearRecord) -> tuple[np.ndarray, np.ndarray | None]:
    clear = load_rgb(rec.image)
    depth = None if rec.depth is None else load_depth(rec.depth)
    if rec.layout == "nyu":
        b = NYU_BORDER
        clear = clear[b:-b, b:-b]
        depth = None if depth is None else normalise_depth(depth[b:-b, b:-b])
    return clear, depth


class PriorDepth:
    """A plausible depth for a clear photo without one, to shape synthetic haze (never a Ψ target).

    Half Ψ's estimate (from the given depth network, normalised) and half the ground-plane prior of outdoor
    photos (farther towards the top of the frame); computed once per file and cached on disk.

    Args:
        estimate: Image H×W×3 -> relative depth H×W×1 (e.g. a trained Ψ), or ``None`` for the prior alone.
        folder: Cache folder.
        tag: Names the estimator in the cache key (e.g. the digest of Ψ's weights), so a new Ψ gives new entries.
    """

    def __init__(self, estimate: Callable[[np.ndarray], np.ndarray] | None, folder: str | Path, tag: str = "") -> None:
        self.estimate = estimate
        self.folder = Path(folder)
        self.tag = tag if estimate is not None else "prior-only"

    def _entry(self, rec: ClearRecord) -> Path:
        key = hashlib.sha1(f"{rec.image.resolve()}|{rec.image.stat().st_size}|{self.tag}".encode())
        return self.folder / f"{rec.image.stem}.prior.{key.hexdigest()[:16]}.npy"

    def fill(self, records: Sequence[ClearRecord]) -> None:
        """Computes every missing depth now (so training never runs the estimator while its weights change)."""
        missing = [r for r in records if r.depth is None and not self._entry(r).is_file()]
        if missing:
            logger.info("computing %d prior depths into %s", len(missing), self.folder)
        for rec in missing:
            self(rec, _load_clear(rec)[0])

    def __call__(self, rec: ClearRecord, clear: np.ndarray) -> np.ndarray:
        entry = self._entry(rec)
        if entry.is_file():
            return np.load(entry).astype(np.float32)
        h = clear.shape[0]
        ramp = np.broadcast_to(np.linspace(1.0, 0.2, h, dtype=np.float32)[:, None, None], (*clear.shape[:2], 1))
        depth: np.ndarray = ramp.copy()
        if self.estimate is not None:
            depth = 0.5 * ramp + 0.5 * normalise_depth(np.clip(self.estimate(clear), 0.0, None))
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(entry, depth.astype(np.float16))
        return depth.astype(np.float32)


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def _item(
    name: str,
    hazy: np.ndarray,
    clear: np.ndarray,
    depth: np.ndarray,
    depth_w: np.ndarray | float,
    teacher: np.ndarray | None = None,
    teacher_w: float = 0.0,
) -> dict:
    dw = depth_w if isinstance(depth_w, np.ndarray) else np.full_like(depth, float(depth_w))
    return {
        "hazy": _tensor(hazy),
        "clear": _tensor(clear),
        "teacher": _tensor(clear if teacher is None else teacher),
        "teacher_w": torch.tensor([teacher_w if teacher is not None else 0.0], dtype=torch.float32),
        "depth": _tensor(depth),
        "depth_w": _tensor(np.asarray(dw, dtype=np.float32)),
        "name": name,
    }


class HazeSynthesis(_Epoched):
    """Hazy pairs synthesised from clear images and depth: scaled crop, flips, colour jitter, then haze.

    Args:
        records: The clear images.
        crop: Output side.
        seed: Seed of the per-item generators.
        length: Items per epoch.
        beta_range: Range of β. airlight_range: Range of the grey airlight A.
        depth_scale: See :func:`training.data.synthesize`.
        prior_depth: Depth for records without one (required when there are such records).
        scale_range: Zoom range of the crop. rotate: Also rotate by k·90° (indoor scenes; not for photos with a sky).
        jitter: Strength of :func:`training.augment.colour_jitter`.
    """

    def __init__(
        self,
        records: Sequence[ClearRecord],
        crop: int,
        seed: int,
        length: int,
        beta_range: tuple[float, float],
        airlight_range: tuple[float, float],
        depth_scale: float = DEFAULT_DEPTH_SCALE,
        prior_depth: PriorDepth | None = None,
        scale_range: tuple[float, float] = (0.6, 1.0),
        rotate: bool = True,
        jitter: float = 1.0,
    ) -> None:
        super().__init__(seed)
        if any(r.depth is None for r in records) and prior_depth is None:
            raise ValueError("records without depth need a prior_depth")
        self.records, self.crop, self.length = list(records), crop, int(length)
        self.beta_range, self.airlight_range, self.depth_scale = beta_range, airlight_range, depth_scale
        self.prior_depth, self.scale_range, self.rotate, self.jitter = prior_depth, scale_range, rotate, jitter

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index % len(self.records)]
        rng = self._rng(index)
        clear, depth = _load_clear(rec)
        true_depth = depth is not None
        if depth is None:
            assert self.prior_depth is not None
            depth = self.prior_depth(rec, clear)
        arrays = random_flip(random_scaled_crop([clear, depth], self.crop, rng, self.scale_range), rng)
        if self.rotate:
            arrays = random_rot90(arrays, rng)
        clear, depth = colour_jitter(arrays[0], rng, self.jitter), arrays[1]
        beta, airlight = float(rng.uniform(*self.beta_range)), float(rng.uniform(*self.airlight_range))
        hazy = synthesize(clear, depth, beta, airlight, self.depth_scale)
        name = f"{rec.name}_syn_b{beta:.2f}_a{airlight:.2f}"
        return _item(name, hazy, clear, depth, 1.0 if true_depth else 0.0)


class TeacherPairs(_Epoched):
    """Real hazy/clear/depth pairs of a RESIDE folder with a teacher's output on each hazy image as extra target.

    Args:
        root: RESIDE-layout folder with depth.
        cache: Where the teacher outputs are (computed at construction when missing).
        teacher: Teacher name in ``cache``.
        crop: Output side. seed: Seed. length: Items per epoch. exclude: Scenes to leave out.
        teacher_weight: Weight of the extra target.
        scale_range: Zoom range of the crop.
    """

    def __init__(
        self,
        root: str | Path,
        cache: LabelCache,
        teacher: str,
        crop: int,
        seed: int,
        length: int,
        exclude: Sequence[str],
        teacher_weight: float,
        scale_range: tuple[float, float] = (0.6, 1.0),
    ) -> None:
        super().__init__(seed)
        self.records = scan_pairs(root, exclude=exclude)
        if any(r.depth is None for r in self.records):
            raise ValueError(f"{root}: teacher pairs need depth maps")
        self.cache, self.teacher, self.crop, self.length = cache, teacher, crop, int(length)
        self.teacher_weight, self.scale_range = teacher_weight, scale_range
        cache.fill([r.hazy for r in self.records], [teacher], None)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index % len(self.records)]
        rng = self._rng(index)
        assert rec.depth is not None
        arrays = [
            load_rgb(rec.hazy),
            load_rgb(rec.clear),
            load_depth(rec.depth),
            self.cache.dehazed(rec.hazy, self.teacher),
        ]
        arrays = random_rot90(random_flip(random_scaled_crop(arrays, self.crop, rng, self.scale_range), rng), rng)
        hazy, clear, depth, taught = arrays
        return _item(rec.name, hazy, clear, depth, 1.0, taught, self.teacher_weight)


class RealPhotos(_Epoched):
    """Real hazy photos whose target is a teacher label, with a pseudo-depth weighted by its confidence.

    Args:
        labels: The labelled photos (:meth:`training.teachers.labels.LabelCache.real_label`).
        crop: Output side. seed: Seed. length: Items per epoch.
        depth_weight: Multiplies the pseudo-depth's confidence (0 turns depth supervision off).
        scale_range: Zoom range of the crop.
    """

    def __init__(
        self,
        labels: Sequence[tuple[str, RealLabel]],
        crop: int,
        seed: int,
        length: int,
        depth_weight: float,
        scale_range: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        super().__init__(seed)
        if not labels:
            raise ValueError("no labelled real photos")
        self.labels, self.crop, self.length = list(labels), crop, int(length)
        self.depth_weight, self.scale_range = depth_weight, scale_range

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        name, lab = self.labels[index % len(self.labels)]
        rng = self._rng(index)
        arrays = [lab.hazy, lab.label, lab.depth, lab.confidence]
        hazy, label, depth, conf = random_flip(random_scaled_crop(arrays, self.crop, rng, self.scale_range), rng)
        return _item(f"{name}_real", hazy, label, depth, conf * self.depth_weight)


class SourceMix(_Epoched):
    """Draws each item from one of several sources with fixed probabilities.

    Item ``i`` picks source ``k`` with the generator ``(seed, epoch, i, 1)`` and returns ``sources[k][i]``.

    Args:
        sources: Datasets indexable at least up to ``length``.
        weights: Non-negative proportions (normalised here).
        length: Items per epoch.
        seed: Seed.
    """

    def __init__(self, sources: Sequence[Dataset], weights: Sequence[float], length: int, seed: int) -> None:
        super().__init__(seed)
        w = np.asarray(weights, dtype=np.float64)
        if len(sources) != len(w) or not len(w) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"need one non-negative weight per source with a positive sum, got {list(weights)}")
        self.sources, self.p, self.length = list(sources), w / w.sum(), int(length)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch here and in every source."""
        super().set_epoch(epoch)
        for s in self.sources:
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        k = int(self._rng(index, stream=1).choice(len(self.sources), p=self.p))
        return self.sources[k][index]
