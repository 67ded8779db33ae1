"""The real hazy photos of a fine-tuning run: loaded once at their working size, visited in a seeded order.

Photos come from flat folders less the held-out stems (:func:`training.distill.real_photo_paths`, the rule
``dehaze train``'s distillation uses) and are downscaled once so the longer side is at most ``max_side``, with the
same function the teacher-label cache uses (so cached LKD-Net outputs have exactly the photo's working size).

The visiting order is a pure function of (seed, step): epoch e is a seeded permutation of all photos and step s
takes the next ``batch`` entries, so every photo is visited equally often and a resumed run continues the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import load_rgb, resize_max_side
from training.distill import real_photo_paths

__all__ = ["RealPhoto", "load_real_photos", "visit_order"]


@dataclass(frozen=True)
class RealPhoto:
    """One photo at its working size.

    Attributes:
        name: Its file stem (the label pool's key).
        path: The file.
        image: H×W×3 float32 RGB in [0, 1].
    """

    name: str
    path: Path
    image: np.ndarray


def load_real_photos(
    roots: list[str], held_out: list[str], max_side: int, max_photos: int | None = None, subset_seed: int = 0
) -> list[RealPhoto]:
    """Every photo of ``roots`` not in ``held_out`` (or ``max_photos`` of them), downscaled to ``max_side``.

    A subset is the first ``max_photos`` of a ``subset_seed`` permutation of the kept photos (sorted by path), so
    subsets of one seed are nested; the photos keep their sorted order.

    Raises:
        ValueError: No photo left, or two photos share a stem.
    """
    if not roots:
        raise ValueError("no real photo folders: set real.roots in the config or pass --real")
    paths = real_photo_paths(roots, held_out)
    if not paths:
        raise ValueError(f"no real photos in {roots} after holding out {len(held_out)} names")
    if max_photos is not None and max_photos < len(paths):
        chosen = np.random.default_rng(subset_seed).permutation(len(paths))[:max_photos]
        paths = [paths[i] for i in sorted(chosen)]
    return [RealPhoto(p.stem, p, resize_max_side(load_rgb(p), max_side)) for p in paths]


def visit_order(count: int, seed: int, step: int, batch: int) -> list[int]:
    """Indices of the ``batch`` photos (of ``count``) visited at ``step``."""
    out = []
    for k in range(step * batch, (step + 1) * batch):
        epoch, pos = divmod(k, count)
        out.append(int(np.random.default_rng((seed, 11, epoch)).permutation(count)[pos]))
    return out
