"""Memory layout of activations: keep a channels-last network channels-last through concatenations and sums.

The exported artifact stores its convolution weights channels-last (``model.export``), so oneDNN computes NHWC
without converting around each convolution. Two kinds of tensors break that chain: a 1-channel map (depth) is
both NCHW- and NHWC-contiguous, and a 1×1 convolution's weight is too, so a 1×1 convolution keeps whatever layout its
input has. ``torch.cat`` of an NHWC tensor with such an ambiguous one, or a reduction over a stacked dimension,
returns NCHW, which then travels through every following 1×1 convolution and costs a layout conversion in front of
each 3×3 one. Measured on the small model at 620×460 on the 2-core CPU: about 7 % of a float32 forward and 25 % of
a bfloat16 one.

:func:`cat_channels` and :func:`keep_channels_last` return NHWC when any input is strictly NHWC, so a network with
NCHW weights (training, eager evaluation) is left exactly as it was and one with NHWC weights stays NHWC. The
result's values are unchanged; only strides differ.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["cat_channels", "channels_last_copy", "is_channels_last", "keep_channels_last"]


def is_channels_last(tensor: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out NHWC and not also NCHW (1-channel and 1×1 tensors are both)."""
    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def keep_channels_last(result: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``result`` laid out NHWC when any of ``inputs`` is (see the module docstring), else ``result`` itself."""
    if any(is_channels_last(t) for t in inputs):
        return result.contiguous(memory_format=torch.channels_last)
    return result


def cat_channels(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, dim=1)``, NHWC when any part is."""
    return keep_channels_last(torch.cat(list(parts), dim=1), parts)


class _ChannelsLastInput(nn.Module):
    """Runs ``module`` on its input laid out NHWC (the image would otherwise enter four convolutions NCHW)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def channels_last_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its 4-D weights channels-last (NHWC in memory) that takes its input NHWC; the
    caller's module is untouched.

    Such weights make oneDNN run the convolutions NHWC throughout, without layout conversions around each one
    (:func:`cat_channels` keeps concatenations NHWC too): the artifact (``model.export``) and the CPU's bfloat16 copy
    (``model.precision``) are made from it. On the 2-core CPU the small model's artifact ran about 1.3× faster than
    with NCHW weights (``tests/benchmarks/bench_model.py``), with outputs equal to ~1e-6. Inputs may have either
    layout.
    """
    clone = copy.deepcopy(module)
    for param in clone.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return _ChannelsLastInput(clone).train(module.training)
