"""The mean teacher: an exponential moving average (EMA) of the student's weights.

After every optimiser step, for each parameter, ``teacher ← decay·teacher + (1 − decay)·student`` (the released
Colabator: decay 0.999, parameters only). Buffers (none in CORUN; InstanceNorm keeps none either) are copied from
the student, so a network with running statistics would not mix two models' statistics.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

__all__ = ["ema_update", "make_teacher"]

_Module = TypeVar("_Module", bound=nn.Module)


def make_teacher(student: _Module) -> _Module:
    """A frozen copy of the student, in eval mode: the teacher at step 0."""
    teacher = copy.deepcopy(student).eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Moves the teacher towards the student: ``t ← decay·t + (1 − decay)·s`` for every parameter.

    Raises:
        ValueError: ``decay`` outside [0, 1], or the two modules' parameters do not correspond.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        raise ValueError("teacher and student have different parameters")
    for name, t in t_params.items():
        t.mul_(decay).add_(s_params[name].detach(), alpha=1.0 - decay)
    s_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        buf.copy_(s_buffers[name])
