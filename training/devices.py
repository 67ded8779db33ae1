"""How a training run computes: its hardware in words, mixed precision (the device itself: ``model.device``).

Shared by every trainer (DCMPNet's :mod:`training.trainer`, CORUN's :mod:`training.corun_train`, Colabator's
:mod:`training.colabator.finetune`). The description goes into each checkpoint's provenance.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

__all__ = ["amp_dtype", "autocast", "describe_hardware"]


def describe_hardware(device: torch.device) -> str:
    """The device a run trains on, in words (recorded in every checkpoint)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")), ""
    )
    return f"CPU {model or platform.processor() or 'unknown'}, {torch.get_num_threads()} torch threads"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a config ``amp`` mode (``None``: full precision). Mixed precision is CUDA-only."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(amp: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in ``amp`` on ``device``; a context that does nothing for full precision (``None``)."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)
