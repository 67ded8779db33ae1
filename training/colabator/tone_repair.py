"""Tone repair of a candidate pseudo-label: lift crushed shadows towards the photo, remove a global colour cast.

Our addition to Colabator. The pre-trained ``dcmpnet_small`` removes the most haze of any label source we have
(FADE 0.34 on the training photos at 384 px, against 0.49 for the dark channel prior and 1.02 for LKD-Net's OTS
weights), but its outputs break the tone limits on every photo: about 10 % of pixels crushed to near-black and a
red cast (R−G +0.035). The pool's tone guard therefore rejected all of its labels, and the fine-tuned model learned
from labels that leave much haze in. Repairing a label before it is scored keeps the haze it removed and drops
the two faults:

1. **Shadows.** A pixel whose luminance ``l`` is below ``shadow`` moves towards the hazy photo by
   ``strength · (shadow − l) / shadow``: fully (for ``strength`` 1) at black, not at all from ``shadow`` up. Near-black
   output is where a dehazer subtracted more airlight than the photo held; the photo's own value is the honest
   fallback there.
2. **Colour.** The mean of R−G and of B−G is shifted back to the photo's (R and B move; G, hence most of the
   luminance, stays). Haze is grey, so removing it should not change the mean colour differences.

On the 45 training photos (384 px), the repaired outputs of the pre-trained model: FADE 0.49, 0.8 % crushed, 43 of 45
within the tone limits (``shadow`` 0.1, ``strength`` 1). The repair is applied to every candidate (EMA teacher,
teachers, priors) before the tone guard and the scorers see it, so the pool rule is unchanged.
"""

from __future__ import annotations

import numpy as np

from training.metrics import tone_shift

__all__ = ["LUMA", "repair_tones"]

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""BT.601 luminance weights, the repair's shadow test. Not the BT.709 weights with which
:func:`training.metrics.tone_shift` counts crushed pixels: the shipped recipe was trained with these, and the two
differ little below the 0.1 shadow level (the tone guard then checks the repaired label with BT.709)."""


def repair_tones(hazy: np.ndarray, label: np.ndarray, shadow: float, strength: float, colour: bool) -> np.ndarray:
    """The repaired label, H×W×3 float32 in [0, 1].

    Args:
        hazy: The photo, H×W×3 in [0, 1].
        label: A candidate label of it, same shape.
        shadow: Luminance below which a pixel is lifted (0 turns the shadow repair off).
        strength: How far a black pixel moves towards the photo (0 to 1).
        colour: Whether to remove the change of mean R−G and B−G.
    """
    if hazy.shape != label.shape or label.ndim != 3 or label.shape[2] != 3:
        raise ValueError(f"need two H×W×3 images of one size, got {hazy.shape} and {label.shape}")
    out = label.astype(np.float32, copy=True)
    if shadow > 0 and strength > 0:
        lum = out @ LUMA
        weight = (np.clip((shadow - lum) / shadow, 0.0, 1.0) * strength)[..., None]
        out += weight * (hazy.astype(np.float32) - out)
    if colour:
        shift = tone_shift(hazy, out)
        out[..., 0] -= shift.rg_shift
        out[..., 2] -= shift.bg_shift
    return np.clip(out, 0.0, 1.0)
