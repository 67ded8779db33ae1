"""Compute precision of inference: which one a device gets, and the bfloat16 copy of a pipeline for the CPU.

On CUDA, bfloat16/float16 run the float32 network under ``torch.autocast`` (``service.worker.runner``). On the CPU
the reduced precision is a **bfloat16 copy of the weights**: every layer computes in bfloat16 (oneDNN's AVX-512
BF16/AMX kernels) and only the pipeline's input and outputs are float32. On a 2-vCPU Xeon with AMX the small
model's bfloat16 artifact ran 1.51× the float32 artifact at 620×460 and 1.55× at 1080p, 0.01 dB PSNR and 0.0009 SSIM
from float32 on validation scenes (``tests/benchmarks/bench_model.py``, ``bench_int8.py``, ``docs/benchmarks.md``);
CPU autocast (float32 weights, casts around each convolution) reached about 1.25× in a first try.

A CPU without native bfloat16 (AVX-512 BF16 or AMX) emulates it: on an AVX2-only machine the small model ran 5-10×
*slower* in bfloat16, so ``auto`` picks bfloat16 only where :func:`cpu_has_native_bf16` says so. Not offered on the
CPU: float16 (an eager float16 copy ran about 1.1× float32, far behind bfloat16) and static int8 of the
convolutions (1.03× float32 and SSIM 0.019 below it: it fails the quality gate of PSNR within 0.1 dB and SSIM within
0.002).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from model.layout import channels_last_copy

__all__ = [
    "ARTIFACT_DTYPES",
    "DTYPES",
    "TORCH_DTYPES",
    "CastPipeline",
    "artifact_dtype_for",
    "cpu_has_native_bf16",
    "resolve_dtype",
    "with_precision",
]

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""The precisions a runner accepts (``DEHAZE_DTYPE``, ``--dtype``); :func:`resolve_dtype` says which ``auto`` is."""

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ARTIFACT_DTYPES = ("float32", "bfloat16")
"""Precisions an artifact is exported in: float32 (CUDA's reduced precisions are autocast over it) and the CPU's."""


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX tiles), as PyTorch's CPU probe reports."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log a warning the first time only: a process resolves its precision more than once (artifact, runner)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def resolve_dtype(requested: str, device_type: str) -> str:
    """The precision a runner on ``device_type`` computes in for the ``requested`` setting.

    ``auto``: float32 on CUDA (autocast is a choice there, not a default), bfloat16 on a CPU with native bfloat16,
    else float32. On the CPU, float16 is not offered (float32 is used, with a warning); an explicit bfloat16 on a CPU
    without native support is honoured, with a warning that it will be slower.

    Raises:
        ValueError: an unknown precision.
    """
    if requested not in DTYPES:
        raise ValueError(f"unknown dtype {requested!r}; expected one of {list(DTYPES)}")
    if device_type == "cuda":
        return "float32" if requested == "auto" else requested
    if requested == "auto":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    if requested == "float16":
        _warn_once("float16 is not offered on the CPU (see docs/benchmarks.md); running float32")
        return "float32"
    if requested == "bfloat16" and not cpu_has_native_bf16():
        _warn_once("this CPU has no native bfloat16 (AVX-512 BF16/AMX): bfloat16 will be slower than float32")
    return requested


def artifact_dtype_for(requested: str, device_type: str) -> str:
    """The precision exported into the artifact a runner on ``device_type`` loads: the resolved precision on the CPU,
    float32 on CUDA (where bfloat16/float16 are autocast over the float32 graph)."""
    return "float32" if device_type == "cuda" else resolve_dtype(requested, device_type)


class CastPipeline(nn.Module):
    """A copy of a pipeline with its weights in ``dtype``: float32 N×3×H×W in, float32 ``(dehazed, depth)`` out.

    The contract stays the float32 pipeline's, so a traced copy is a drop-in artifact and callers need not know.
    The caller's pipeline is left as it is.
    """

    def __init__(self, pipeline: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.pipeline = copy.deepcopy(pipeline).to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dehazed, depth = self.pipeline(x.to(self.dtype))
        return dehazed.float(), depth.float()


def with_precision(pipeline: nn.Module, dtype: str, device_type: str) -> nn.Module:
    """``pipeline`` as it runs in ``dtype`` on ``device_type``: for reduced precision on the CPU a
    :class:`CastPipeline` of its channels-last copy (``model.layout``; eager bfloat16 with NCHW weights ran about
    1.6× slower), else ``pipeline`` itself (float32, or CUDA, where the runner applies autocast)."""
    if device_type == "cpu" and dtype != "float32":
        return CastPipeline(channels_last_copy(pipeline), TORCH_DTYPES[dtype]).train(pipeline.training)
    return pipeline
