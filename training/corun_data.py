"""CORUN's pre-training pairs: clear images with depth, degraded on the fly as the released code does.

Each item takes a clear image and its depth (``reside`` layout, e.g. SOTS ``GT/`` + ``depth/``, or ``nyu``, see
:func:`training.sources.clear_records`), normalises the depth over the whole image, cuts the same random window
from both (optionally zoomed, :func:`training.augment.random_scaled_crop`), flips both horizontally with p = 0.5
(the released pre-training's only geometric augmentation) and makes the input with
:func:`training.corun_haze.degrade`. Item ``i`` uses record ``i % len(records)`` and the generator
``(seed, epoch, i)``, so one index always gives one sample and a resumed run sees the same items.

Items: ``hazy`` and ``clear`` (float32 3×crop×crop in [0, 1]) and ``name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.augment import random_flip, random_scaled_crop
from training.corun_haze import HazeRecipe, degrade, minmax_depth
from training.data import _Epoched
from training.sources import ClearRecord, Layout, SourceMix, _load_clear, clear_records

__all__ = ["CorunHaze", "build_corun_mixture"]


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


class CorunHaze(_Epoched):
    """Clear images with true depth, degraded by CORUN's synthetic-haze pipeline.

    Args:
        records: Clear images, each with a depth file.
        crop: Output side.
        seed: Seed of the per-item generators.
        length: Items per epoch.
        recipe: The degradation's ranges.
        scale_range: Zoom of the crop window ((1, 1): a plain crop at full resolution, as released).

    Raises:
        ValueError: No records, or a record without depth.
    """

    def __init__(
        self,
        records: Sequence[ClearRecord],
        crop: int,
        seed: int,
        length: int,
        recipe: HazeRecipe,
        scale_range: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__(seed)
        if not records:
            raise ValueError("no clear images")
        if missing := [r.name for r in records if r.depth is None]:
            raise ValueError(f"CORUN's haze needs true depth; no depth for {missing[:5]}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.records, self.crop, self.length = list(records), int(crop), int(length)
        self.recipe, self.scale_range = recipe, scale_range

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index % len(self.records)]
        rng = self._rng(index)
        clear, depth = _load_clear(rec)
        assert depth is not None  # checked in __init__
        window = random_scaled_crop([clear, minmax_depth(depth)], self.crop, rng, self.scale_range)
        clear, depth01 = random_flip(window, rng)
        hazy, drawn = degrade(clear, depth01, rng, self.recipe)
        name = f"{rec.name}_corun_b{drawn.beta:.2f}_a{float(drawn.airlight.mean()):.2f}"
        return {"hazy": _tensor(hazy), "clear": _tensor(clear), "name": name}


def build_corun_mixture(
    sources: Sequence[tuple[Path, Layout, float, Sequence[str]]],
    crop: int,
    seed: int,
    length: int,
    recipe: HazeRecipe,
    scale_range: tuple[float, float] = (1.0, 1.0),
) -> SourceMix:
    """One :class:`CorunHaze` per folder, mixed in the given proportions.

    Args:
        sources: ``(root, layout, weight, excluded scenes)`` per folder; layout ``reside`` or ``nyu``.
        crop: Output side. seed: Seed. length: Items per epoch of the mixture.
        recipe: The degradation's ranges. scale_range: See :class:`CorunHaze`.

    Raises:
        ValueError: A folder of a layout without depth (``flat``), or as :class:`CorunHaze`.
    """
    sets: list[Dataset] = []
    for k, (root, layout, _, exclude) in enumerate(sources):
        if layout not in ("reside", "nyu"):
            raise ValueError(f"{root}: layout {layout!r} has no depth; CORUN's haze needs reside or nyu")
        records = clear_records(root, layout, exclude)
        sets.append(CorunHaze(records, crop, seed + 10 * (k + 1), length, recipe, scale_range))
    return SourceMix(sets, [w for _, _, w, _ in sources], length, seed)
