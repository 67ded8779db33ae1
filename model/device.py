"""The one answer to "which device does this process compute on": the service, training and evaluation ask it.

``auto`` picks CUDA when torch sees a GPU, else the CPU. Naming CUDA on a machine without it is an error rather than
a silent fall-back to the CPU: a run configured for a GPU that computes for hours on a CPU is worse than one that
stops at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str, choices: Sequence[str] | None = None) -> torch.device:
    """The device ``name`` means: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (any name torch knows).

    Args:
        name: The requested device.
        choices: The only names a caller accepts (the service's ``auto``, ``cpu``, ``cuda``); ``None``: any.

    Raises:
        ValueError: ``name`` is not one of ``choices``, or it names CUDA and CUDA is not available.
    """
    if choices is not None and name not in choices:
        expected = " or ".join([", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices)
        raise ValueError(f"unknown device {name!r}; expected {expected}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)
