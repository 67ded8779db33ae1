"""A training run's resume state in one small file that can live in git (``resume_state:`` of a training config).

A run folder (``runs/...``) is lost with its machine. The trainer's ``last.pt`` holds everything an exact resume
needs, but Adam's two moments in float32 make it three times the size of the networks. The resume state keeps the
same entries with the optimiser moments (``exp_avg``, ``exp_avg_sq``) in bfloat16, which halves their share; the
networks, perceptrons, schedulers, step counters, the data position (the step: the order of every epoch is a pure
function of seed and epoch, :func:`training.loop.epoch_order`) and the random state stay exact. A moment rounded to
bfloat16 (8 significant bits, float32's exponent range) changes the next Adam updates by well under 1 %, which is
within the noise of the run.

:func:`pack` writes it (the trainer does at every validation when the config names a file), :func:`unpack` writes it
back as ``last.pt`` (and the validation history as ``log.jsonl``) into a run folder without a ``last.pt``; ``dehaze
train --resume`` does that by itself when the run folder is gone, then continues the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import write_atomically

__all__ = ["MOMENTS", "STATE_FORMAT", "pack", "unpack"]

logger = logging.getLogger(__name__)

STATE_FORMAT = "dehaze-resume-state/1"
MOMENTS = ("exp_avg", "exp_avg_sq")  # Adam's per-parameter moments: the only entries stored in bfloat16
_OPTIMISERS = ("opt_phi", "opt_psi", "opt")  # keys of ``extra`` that hold an optimiser's state_dict


def _cast_moments(optimiser: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    state = {
        index: {k: (v.to(dtype) if k in MOMENTS and torch.is_tensor(v) else v) for k, v in entry.items()}
        for index, entry in optimiser["state"].items()
    }
    return {**optimiser, "state": state}


def _with_moments(raw: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    extra = dict(raw["extra"])
    for key in _OPTIMISERS:
        if isinstance(extra.get(key), dict) and "state" in extra[key]:
            extra[key] = _cast_moments(extra[key], dtype)
    return {**raw, "extra": extra}


def pack(checkpoint: str | Path, out: str | Path) -> Path:
    """Writes the resume state of a training checkpoint (``last.pt``) to ``out`` (atomically).

    The run folder's ``log.jsonl`` beside the checkpoint (the validation history) travels with it as text.

    Raises:
        ValueError: The checkpoint holds no training state (``extra`` with a step).
    """
    raw = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    if not isinstance(raw.get("extra"), dict) or "step" not in raw["extra"]:
        raise ValueError(f"{checkpoint} holds no training state: nothing to resume from")
    log = Path(checkpoint).with_name("log.jsonl")
    state = {
        **_with_moments(raw, torch.bfloat16),
        "state_format": STATE_FORMAT,
        "log": log.read_text() if log.is_file() else "",
    }
    path = write_atomically(out, lambda tmp: torch.save(state, tmp))
    logger.info("resume state of step %d -> %s (%.1f MB)", raw["extra"]["step"], path, path.stat().st_size / 1e6)
    return path


def unpack(state_file: str | Path, run_dir: str | Path) -> Path:
    """Writes ``run_dir/last.pt`` from a resume state, the moments back in float32; returns its path.

    Raises:
        ValueError: Not a resume state.
        FileExistsError: ``run_dir`` already has a ``last.pt`` (a live run is never overwritten).
    """
    raw = torch.load(Path(state_file), map_location="cpu", weights_only=True)
    if raw.get("state_format") != STATE_FORMAT:
        raise ValueError(f"{state_file} is not a resume state ({STATE_FORMAT})")
    target = Path(run_dir) / "last.pt"
    if target.exists():
        raise FileExistsError(f"{target} exists: resume from it, or move it away to resume from {state_file}")
    target.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = _with_moments({k: v for k, v in raw.items() if k not in ("state_format", "log")}, torch.float32)
    write_atomically(target, lambda tmp: torch.save(checkpoint, tmp))
    if raw.get("log"):
        (target.parent / "log.jsonl").write_text(raw["log"])
    logger.info("unpacked the resume state of step %d from %s into %s", raw["extra"]["step"], state_file, target)
    return target
