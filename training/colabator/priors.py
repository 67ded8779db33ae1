"""Hand-made dehazing methods as pseudo-label candidates beside the teacher networks.

Colabator's pool takes candidates from networks only (the EMA teacher, and here LKD-Net). On our real photos
LKD-Net's outdoor weights remove little haze (FADE ratio about 0.7 on the held-out photos), so the pool's labels
held the fine-tuned model at that level. The dark channel prior removes far more (ratio about 0.35) and keeps
natural tones on many photos, where it fails (sky, bright objects) the tone guard and the pool rule (better on
every score) keep the stored label. A prior is deterministic, so its output is computed when the pool is seeded
and never cached.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from model.physics import dcp_dehaze
from training.colabator.config import PriorName
from training.data import from_chw, to_chw

__all__ = ["PRIORS", "prior_label"]

PRIORS: tuple[str, ...] = get_args(PriorName)
"""The priors ``pool.priors`` may name."""


def prior_label(image: np.ndarray, prior: str) -> np.ndarray:
    """A prior's dehazed output of an H×W×3 photo in [0, 1], same shape, float32.

    Raises:
        ValueError: An unknown prior.
    """
    if prior != "dcp":
        raise ValueError(f"unknown prior {prior!r}; known: {PRIORS}")
    with torch.no_grad():
        out, _ = dcp_dehaze(to_chw(image)[None])
    return from_chw(out[0])
