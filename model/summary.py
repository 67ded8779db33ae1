"""Parameters, MACs and CPU latency of every model variant of every family (``dehaze summary``).

MACs are those of the whole inference pipeline (Ψ + Φ for DCMPNet, the network for CORUN; as served) at
1×3×256×256, counted by
``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2; convolutions, matmuls and linear layers, which
is where nearly all the cost is). Latency is the median of ``repeats`` timed batch-1 calls after one warm-up, in
``torch.inference_mode``, on this machine with its current thread setting and load, so compare numbers taken
together only. The paper-size variants take seconds per call on a 2-core CPU (``corun`` about ten).

A row has the family and the total parameters; ``phi_params``/``psi_params`` split DCMPNet's between its two
networks and are None for CORUN, which has one.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from model.families import build_inference_pipeline, family_of
from model.pipeline import DehazePipeline

__all__ = ["count_params", "cpu_latency_ms", "format_table", "pipeline_gmac", "summarize"]

SIZE = 256


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def pipeline_gmac(pipeline: nn.Module, hw: tuple[int, int] = (SIZE, SIZE)) -> float:
    """GMACs of one batch-1 forward pass at ``hw``, counted on a copy on the meta device.

    Nothing is computed (any size costs milliseconds), and every operator takes its reference path: fused
    kernels the counter has no formula for (CPU flash attention behind ``scaled_dot_product_attention``) would
    otherwise drop their matmuls from the count.
    """
    meta = copy.deepcopy(pipeline).to("meta")
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        meta(torch.empty(1, 3, *hw, device="meta"))
    return counter.get_total_flops() / 2e9


def cpu_latency_ms(pipeline: nn.Module, hw: tuple[int, int] = (SIZE, SIZE), repeats: int = 3) -> float:
    """Median wall time in ms of a batch-1 forward pass at ``hw`` after one warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    x = torch.rand(1, 3, *hw)
    times = []
    with torch.inference_mode():
        pipeline(x)
        for _ in range(repeats):
            start = time.perf_counter()
            pipeline(x)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def summarize(name: str, repeats: int = 3, latency: bool = True) -> dict[str, Any]:
    """One row of the summary for variant ``name`` (random weights; cost does not depend on them)."""
    pipeline = build_inference_pipeline(name)
    parts = (pipeline.phi, pipeline.psi) if isinstance(pipeline, DehazePipeline) else None
    row: dict[str, Any] = {
        "name": name,
        "family": family_of(name),
        "params": count_params(pipeline),
        "phi_params": count_params(parts[0]) if parts else None,
        "psi_params": count_params(parts[1]) if parts else None,
        "gmac_256": round(pipeline_gmac(pipeline), 3),
        "cpu_ms_256": round(cpu_latency_ms(pipeline, repeats=repeats), 1) if latency else None,
    }
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of summary rows ("-" where a value does not apply or was not measured)."""
    header = (
        f"{'variant':<16}{'family':<10}{'params':>14}{'Φ params':>14}{'Ψ params':>12}{'GMAC@256²':>12}"
        f"{'CPU ms@256²':>14}\n"
    )
    lines = [header, "-" * (len(header) - 1) + "\n"]
    for r in rows:
        phi, psi, ms = (
            _cell(r.get(k), spec) for k, spec in (("phi_params", ","), ("psi_params", ","), ("cpu_ms_256", ".1f"))
        )
        lines.append(
            f"{r['name']:<16}{r.get('family', ''):<10}{_cell(r.get('params'), ','):>14}{phi:>14}{psi:>12}"
            f"{r['gmac_256']:>12.3f}{ms:>14}\n"
        )
    return "".join(lines)


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
