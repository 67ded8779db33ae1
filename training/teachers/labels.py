"""Teacher outputs as training targets, computed once and cached on disk.

A teacher forward costs seconds per image on the CPU (LKD-s: ~4 s at 620×460 on one core), so every output
whose input repeats is computed once: the real hazy pairs of a RESIDE folder (a fixed set of files) and the
real photos without ground truth. Synthetic haze drawn afresh at every step has ground truth and gets none.

For a real photo several teachers (e.g. LKD-Net's ITS and OTS weights) each propose a label; the scorers pick
one with :func:`choose_label`: among the candidates that keep natural tones (at most 1 % of pixels crushed to
near-black, mean R−G and B−G shifts within ±0.02), the lowest FADE haze density; if none keeps natural tones,
the one that breaks them least. The label comes with a pseudo-depth and its confidence
(:mod:`training.pseudo_depth`) for supervising Ψ.

Cache entries are ``.npz`` files (float16) named by a digest of the image file (path, size, mtime), the teacher
file (name, size) and the working size, so a changed image or teacher is recomputed and nothing goes stale.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.data import load_rgb, resize_max_side
from training.metrics import fade, tone_shift
from training.pseudo_depth import pseudo_depth
from training.teachers.lkd import LKDTeacher

__all__ = ["TONE_LIMITS", "LabelCache", "RealLabel", "choose_label"]

logger = logging.getLogger(__name__)

TONE_LIMITS = {"crushed": 0.01, "rg_shift": 0.02, "bg_shift": 0.02}
"""The natural-tone bounds a label (and the shipped model) must keep."""


@dataclass(frozen=True)
class RealLabel:
    """A real photo's training target: arrays H×W×C float32 in [0, 1] at the working size."""

    hazy: np.ndarray
    label: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    teacher: str


def _tone_violation(hazy: np.ndarray, out: np.ndarray) -> float:
    """0 when the tones are natural, else the largest excess over :data:`TONE_LIMITS` relative to its bound."""
    shift = tone_shift(hazy, out)._asdict()
    return max(0.0, *(abs(shift[k]) / bound - 1.0 for k, bound in TONE_LIMITS.items()))


def choose_label(hazy: np.ndarray, candidates: dict[str, np.ndarray]) -> str:
    """The candidate whose tones are natural with the lowest FADE; else the least tone-breaking one.

    Args:
        hazy: The input photo, H×W×3 in [0, 1].
        candidates: Teacher name -> its dehazed output, same size.

    Returns:
        The chosen teacher's name.
    """
    if not candidates:
        raise ValueError("no candidate labels")
    violations = {name: _tone_violation(hazy, out) for name, out in candidates.items()}
    natural = [name for name, v in violations.items() if v == 0.0]
    if natural:
        return min(natural, key=lambda name: fade(candidates[name]))
    return min(violations, key=lambda name: violations[name])


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _load_image(path: Path, max_side: int | None) -> np.ndarray:
    return resize_max_side(load_rgb(path), max_side)


_WORKER_TEACHERS: dict[str, LKDTeacher] = {}


def _teacher_in_worker(path: str) -> LKDTeacher:
    if path not in _WORKER_TEACHERS:
        _WORKER_TEACHERS[path] = LKDTeacher.from_file(path)
    return _WORKER_TEACHERS[path]


def _run_teacher(teacher_path: str, image_path: str, max_side: int | None, threads: int) -> np.ndarray:
    """One teacher forward on one image file (runs in a pool process)."""
    torch.set_num_threads(threads)
    img = _load_image(Path(image_path), max_side)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    out = _teacher_in_worker(teacher_path)(x)[0]
    return out.permute(1, 2, 0).numpy().astype(np.float32)


class LabelCache:
    """Teacher outputs on image files, computed on first request and stored in ``folder``.

    Args:
        folder: Cache folder (created when missing).
        teachers: Teacher name -> released checkpoint file.
        workers: Processes for :meth:`fill` (each runs one torch thread).
    """

    def __init__(self, folder: str | Path, teachers: Mapping[str, str | Path], workers: int = 1) -> None:
        self.folder = Path(folder)
        self.teachers = {name: Path(p) for name, p in teachers.items()}
        for name, p in self.teachers.items():
            if not p.is_file():
                raise FileNotFoundError(f"teacher {name!r}: weights file not found: {p}")
        self.workers = max(1, int(workers))

    def _entry(self, image: Path, teacher: str, max_side: int | None) -> Path:
        tp = self.teachers[teacher]
        key = f"{_file_key(image)}|{tp.name}|{tp.stat().st_size}|{max_side}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        return self.folder / f"{image.stem}.{teacher}.{digest}.npz"

    def fill(self, images: Sequence[Path], teacher_names: Sequence[str], max_side: int | None) -> int:
        """Computes every missing (image, teacher) output, in parallel; returns how many were computed."""
        todo = [
            (name, Path(img))
            for img in images
            for name in teacher_names
            if not self._entry(Path(img), name, max_side).is_file()
        ]
        if not todo:
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        logger.info("computing %d teacher outputs with %d process(es) into %s", len(todo), self.workers, self.folder)
        with ProcessPoolExecutor(self.workers) as pool:
            futures = [
                (name, img, pool.submit(_run_teacher, str(self.teachers[name]), str(img), max_side, 1))
                for name, img in todo
            ]
            for done, (name, img, fut) in enumerate(futures, 1):
                self._store(self._entry(img, name, max_side), fut.result())
                if done % 10 == 0 or done == len(futures):
                    logger.info("teacher outputs: %d/%d", done, len(futures))
        return len(todo)

    def _store(self, path: Path, out: np.ndarray) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, out=out.astype(np.float16))
        tmp.replace(path)

    def dehazed(self, image: str | Path, teacher: str, max_side: int | None = None) -> np.ndarray:
        """The teacher's output on an image file (H×W×3 float32 in [0, 1]), computed now if not cached."""
        image = Path(image)
        entry = self._entry(image, teacher, max_side)
        if not entry.is_file():
            self.fill([image], [teacher], max_side)
        with np.load(entry) as data:
            return data["out"].astype(np.float32)

    def real_label(
        self, image: str | Path, max_side: int | None = None, teachers: Sequence[str] | None = None
    ) -> RealLabel:
        """The chosen teacher label of a real photo, with pseudo-depth and confidence (see :func:`choose_label`).

        Args:
            image: The photo.
            max_side: Working size (longer side).
            teachers: The candidate teachers (default: every teacher of the cache).
        """
        image = Path(image)
        hazy = _load_image(image, max_side)
        names = list(self.teachers) if teachers is None else list(teachers)
        candidates = {name: self.dehazed(image, name, max_side) for name in names}
        chosen = choose_label(hazy, candidates)
        label = candidates[chosen]
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # noqa: E731
        pd = pseudo_depth(to_t(hazy), to_t(label))
        depth = pd.depth[0].permute(1, 2, 0).numpy()
        conf = pd.confidence[0].permute(1, 2, 0).numpy()
        return RealLabel(hazy, label, depth, conf, chosen)
