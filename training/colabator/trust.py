"""The trust map: how far each pixel of a pseudo-label can be trusted, from block-wise quality scores.

A label is rarely good everywhere: the teacher clears the foreground and leaves haze in the distance, or makes
artefacts in the sky. Colabator scores the label per block (32×32 in the released code) and weights the real-photo
loss per pixel with those local scores, so the student learns from the good regions and little from the bad ones.

Here each scorer named in the config gives one score per block (its ``block_scores`` when it has one, e.g. FADE's
per-patch density map, else the scorer run on each block), each score is mapped to a unit weight, the weights of
the scorers are averaged and clipped to ``[floor, 1]``; the grid is stored with the label and upsampled bilinearly
to the label's size when a crop is cut. The unit map is fixed, not relative to the photo, so a label that is hazy
everywhere is trusted little everywhere:

    lower is better (FADE):   w = half / (half + max(s, 0))     (s = half gives 0.5, s = 0 gives 1)
    higher is better:         w = max(s, 0) / (max(s, 0) + half)

With FADE's ``half`` = 1 (the default), a block of FADE 0.3 (clear) weighs 0.77, 1.0 weighs 0.5, 3.0 (thick haze)
weighs 0.25. The released code's map is (MUSIQ/100 + DA-CLIP term)/2 from its two scorers; CORUN.md §3 notes that
its local DA-CLIP term points the wrong way (more weight to hazier blocks); ours gives hazier blocks less weight,
as the paper intends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.quality import Scorer

__all__ = ["block_scores", "trust_grid", "trust_map", "unit_weight"]


def block_scores(scorer: Scorer, rgb: np.ndarray, block: int) -> np.ndarray:
    """One score per ``block``-px square of an H×W×3 image (edge blocks may be smaller), rows×cols.

    Uses the scorer's own ``block_scores`` when it has one; otherwise calls the scorer on each block.
    """
    own = getattr(scorer, "block_scores", None)
    if callable(own):
        return np.asarray(own(rgb, block), dtype=np.float64)
    h, w = rgb.shape[:2]
    rows, cols = -(-h // block), -(-w // block)
    out = np.empty((rows, cols))
    for r in range(rows):
        for c in range(cols):
            out[r, c] = float(scorer(rgb[r * block : (r + 1) * block, c * block : (c + 1) * block]))
    return out


def unit_weight(scores: np.ndarray, higher_is_better: bool, half: float) -> np.ndarray:
    """Scores -> weights in [0, 1] (see the module docstring); NaN scores get weight 0."""
    raw = np.asarray(scores, dtype=np.float64)
    missing = np.isnan(raw)
    s = np.maximum(np.where(missing, 0.0, raw), 0.0)
    weight = s / (s + half) if higher_is_better else half / (half + s)
    return np.where(missing, 0.0, weight)


def trust_grid(
    rgb: np.ndarray, scorers: Sequence[Scorer], block: int, half: Mapping[str, float], floor: float = 0.0
) -> np.ndarray:
    """The block-wise trust of a label: the mean unit weight over ``scorers``, clipped to ``[floor, 1]``.

    Args:
        rgb: The label, H×W×3 float in [0, 1].
        scorers: Scorers with block scores (or cheap enough to run per block).
        block: Block side in pixels.
        half: Per scorer name, the score of weight 0.5.
        floor: Smallest weight.

    Returns:
        rows×cols float32 in [floor, 1]. Scorers whose grids differ in shape are resized to the first one's
        (nearest block).
    """
    if not scorers:
        raise ValueError("the trust map needs at least one scorer")
    grids = [unit_weight(block_scores(s, rgb, block), s.higher_is_better, half[s.name]) for s in scorers]
    shape = grids[0].shape
    resized = [g if g.shape == shape else _nearest(g, shape) for g in grids]
    return np.clip(np.mean(resized, axis=0), floor, 1.0).astype(np.float32)


def _nearest(grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = np.minimum((np.arange(shape[0]) * grid.shape[0]) // shape[0], grid.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * grid.shape[1]) // shape[1], grid.shape[1] - 1)
    return grid[np.ix_(rows, cols)]


def trust_map(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A block grid (rows×cols) upsampled bilinearly to a 1×H×W per-pixel weight in the grid's range."""
    up = F.interpolate(grid.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[0]
