"""Turn a training checkpoint into shippable weights (``dehaze release``).

A training checkpoint (``last.pt``/``best.pt``) carries the optimiser, scheduler, scaler and perceptron states
for ``--resume`` (about three times the size of the networks). The shipped file keeps only what inference needs,
Φ and Ψ in our checkpoint format, plus a record of where the weights came from: the training step, wall time,
formulation, data folder and splits, the validation scores at that step, and the training config. The result
loads with ``model.checkpoint.load_checkpoint`` like any other checkpoint, and training cannot resume from it.

A CORUN training checkpoint (``"family": "corun"``, :mod:`training.corun_train`) is released the same way: its
network (the EMA weights when the run kept an average) in our CORUN format, loadable by
``model.corun_checkpoint.load_corun_checkpoint`` and the service, with the same provenance.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from model.checkpoint import load_checkpoint, read_weights, save_checkpoint
from model.corun_checkpoint import is_corun_checkpoint, load_corun_checkpoint, save_corun_checkpoint

__all__ = ["release"]

logger = logging.getLogger(__name__)

# Training-state entries of ``extra`` that describe the run (copied into the metadata); the rest is dropped.
_PROVENANCE = ("step", "elapsed", "best_psnr", "config")


def release(
    checkpoint: str | Path,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    phi_from_dehazeformer: str | Path | None = None,
) -> dict[str, Any]:
    """Writes the networks of ``checkpoint`` to ``out`` without the training state.

    Args:
        checkpoint: A checkpoint in our format (a training checkpoint or already released weights).
        out: Destination file (written atomically).
        meta: Extra metadata (plain values) merged over what the checkpoint records.
        phi_from_dehazeformer: Replace Φ by the warm start from this DehazeFormer checkpoint (Φ then computes it
            exactly, :mod:`model.warm_start`) and keep the checkpoint's trained Ψ: what ships when fine-tuning Φ
            did not beat its starting point. Recorded as ``phi: warm start of <file>`` in the metadata.

    Returns:
        The metadata written.

    Raises:
        FileNotFoundError: No such checkpoint.
        ValueError: Not our checkpoint format.
    """
    if is_corun_checkpoint(read_weights(Path(checkpoint), "cpu")):
        return _release_corun(checkpoint, out, meta)
    ckpt = load_checkpoint(checkpoint)
    metadata = _provenance(ckpt.metadata, ckpt.raw, meta)
    if phi_from_dehazeformer is not None:
        from model.warm_start import warm_start_phi

        warm_start_phi(ckpt.phi, phi_from_dehazeformer)
        metadata["phi"] = f"warm start of {Path(phi_from_dehazeformer).name} (not fine-tuned)"
    save_checkpoint(out, ckpt.phi, ckpt.psi, ckpt.variant, metadata, depth_convention=ckpt.depth_convention)
    logger.info("released %s -> %s (variant %s, step %s)", checkpoint, out, ckpt.variant.name, metadata.get("step"))
    return metadata


def _provenance(metadata: dict[str, Any], raw: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's metadata, the run's provenance from ``extra`` and the caller's ``meta``, in that priority."""
    extra = raw.get("extra") or {}
    kept = {k: extra[k] for k in _PROVENANCE if k in extra and not _non_finite(extra[k])}
    out = {**metadata, **kept, **(meta or {})}
    if "elapsed" in out:
        out["train_wall_seconds"] = round(float(out.pop("elapsed")), 1)
    return out


def _non_finite(value: Any) -> bool:
    """A float that is inf or nan (e.g. ``best_psnr`` saved before the first best): not a fact worth shipping."""
    return isinstance(value, float) and not math.isfinite(value)


def _release_corun(checkpoint: str | Path, out: str | Path, meta: dict[str, Any] | None) -> dict[str, Any]:
    loaded = load_corun_checkpoint(checkpoint)
    metadata = _provenance(loaded.metadata, loaded.raw, meta)
    save_corun_checkpoint(out, loaded.net, loaded.variant, metadata)
    logger.info("released %s -> %s (variant %s, step %s)", checkpoint, out, loaded.variant, metadata.get("step"))
    return metadata
