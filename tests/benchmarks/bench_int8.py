"""Static int8 of the convolutions on the CPU, against the float32 and bfloat16 artifacts: is it worth offering?

    python -m tests.benchmarks.bench_int8 --out runs/benchmarks/int8.json

The network cannot be quantised whole: FX graph mode fails on its input-dependent padding (symbolic tracing
cannot branch on shapes), and PT2E quantisation runs fast only through ``torch.compile``, which the service does
not use (``model/export.py``). What remains is eager-mode static quantisation of the convolutions (``torch.ao``,
x86 backend: per-channel int8 weights, histogram-calibrated int8 activations): every ordinary ``nn.Conv2d`` is
wrapped in quantise -> int8 convolution -> dequantise; depthwise/grouped convolutions and MSAAM's sliced heads
(which call ``_conv_forward`` with parts of a weight) stay float32. Calibration: ``--calibration`` hazy images of
training scenes (never the validation scenes), at their own size. The quantised network is traced and frozen like
the service's artifacts.

Timed side by side, in turn, round after round (first round untimed): the float32 artifact, the bfloat16 artifact
(``model.precision``) and the int8 one, batch 1, on validation scenes (1430, 1431) at their own 620×460. Reported:
img/s, ratio to float32, and PSNR/SSIM against GT per precision with the difference to float32, the quality gate
of a CPU precision (PSNR within 0.1 dB, SSIM within 0.002; ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import QuantWrapper, convert, get_default_qconfig, prepare

from model.export import export_pipeline, load_artifact
from service.worker.runner import from_tensor, to_tensor
from tests.benchmarks import common
from tests.benchmarks.bench_model import run_rounds
from training.metrics import mean_finite_psnr, psnr, ssim

CALIBRATION_SCENES = tuple(str(scene) for scene in range(1400, 1430))  # the shipped model's training scenes
GATE_PSNR_DB, GATE_SSIM = 0.1, 0.002
Images = list[np.ndarray]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench_int8", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "int8")
    parser.add_argument("--images", type=int, default=4, help="validation images timed and scored (default 4)")
    parser.add_argument("--calibration", type=int, default=8, help="training images to calibrate on (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up round (default 2)")
    parser.add_argument("--scenes", nargs="+", default=list(common.VALIDATION_SCENES), help="scenes timed and scored")
    parser.add_argument("--calibration-scenes", nargs="+", default=list(CALIBRATION_SCENES))
    return parser.parse_args(argv)


def quantise_convolutions(pipeline: nn.Module, calibration: Images) -> tuple[nn.Module, int]:
    """An int8 copy of ``pipeline`` (see the module docstring) and the number of convolutions quantised."""
    torch.backends.quantized.engine = "x86"
    model = copy.deepcopy(pipeline).eval()
    count = _wrap_convolutions(model, get_default_qconfig("x86"))
    prepare(model, inplace=True)
    with torch.inference_mode(False), torch.no_grad():
        for image in calibration:
            model(to_tensor(image))
    convert(model, inplace=True)
    return model, count


def _wrap_convolutions(module: nn.Module, qconfig: Any) -> int:
    if type(module).__name__ == "MSAAM":  # its heads are called through _conv_forward with sliced weights
        return 0
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Conv2d and child.groups == 1:
            wrapped = QuantWrapper(child)
            wrapped.qconfig = qconfig
            setattr(module, name, wrapped)
            count += 1
        else:
            count += _wrap_convolutions(child, qconfig)
    return count


def trace_int8(model: nn.Module, path: Path) -> torch.jit.ScriptModule:
    """Trace and freeze the int8 network as the service's artifacts are (quantised modules need NCHW weights)."""
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, torch.rand(1, 3, 64, 64), check_trace=False))
    torch.jit.save(frozen, str(path))
    return load_artifact(path)


def forward_all(module: Any, images: Images) -> Images:
    """Dehazed outputs of ``module`` for each image, batch 1."""
    with torch.inference_mode():
        return [from_tensor(module(to_tensor(image))[0])[0] for image in images]


def rows_of(seconds: dict[str, list[float]], outputs: dict[str, Images], gts: Images) -> list[dict[str, Any]]:
    """img/s, ratio to float32 and quality per precision."""
    quality = {
        name: (
            mean_finite_psnr(psnr(o, g) for o, g in zip(outs, gts, strict=True)),
            float(np.mean([ssim(o, g) for o, g in zip(outs, gts, strict=True)])),
        )
        for name, outs in outputs.items()
    }
    rows = []
    for name, times in seconds.items():
        ratios = [f / t for f, t in zip(seconds["float32"], times, strict=True)]
        rows.append(
            {
                "precision": name,
                "images_per_s": len(gts) / statistics.median(times),
                "ratio_vs_fp32": statistics.median(ratios),
                "psnr_db": quality[name][0],
                "ssim": quality[name][1],
                "delta_psnr_db": quality[name][0] - quality["float32"][0],
                "delta_ssim": quality[name][1] - quality["float32"][1],
            }
        )
    return rows


COLUMNS = [
    common.Column("precision", "precision"),
    common.Column("images_per_s", "img/s", ".3f"),
    common.Column("ratio_vs_fp32", "× fp32", ".2f"),
    common.Column("psnr_db", "PSNR GT dB", ".3f"),
    common.Column("delta_psnr_db", "Δ PSNR", "+.3f"),
    common.Column("ssim", "SSIM", ".4f"),
    common.Column("delta_ssim", "Δ SSIM", "+.4f"),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and the gate, write the JSON; returns the results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, "cpu")
    machine = common.machine_info(device, args.threads)
    pipeline, source = common.load_pipeline(args.weights)
    images, gts = common.prepare_images(common.load_sots(args.data, args.images, args.scenes), None)
    calibration, _ = common.prepare_images(common.load_sots(args.data, args.calibration, args.calibration_scenes), None)
    int8, quantised = quantise_convolutions(pipeline, calibration)
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp:
        folder = Path(tmp)
        modules = {
            dtype: load_artifact(export_pipeline(pipeline, folder / f"{dtype}.ts.pt", dtype=dtype))
            for dtype in ("float32", "bfloat16")
        }
        modules["int8"] = trace_int8(int8, folder / "int8.ts.pt")
        modes = {name: partial(forward_all, module) for name, module in modules.items()}
        measured = run_rounds(modes, images, args.rounds, common.CPU)
        seconds, outputs = measured["seconds"], measured["outputs"]
    rows = rows_of(seconds, outputs, gts)
    height, width = images[0].shape[:2]
    print(common.format_table(rows, COLUMNS, title=f"CPU precisions, {len(images)} images at {width}x{height}:"))
    targets = [
        common.target(f"{row['precision']} |Δ PSNR| (dB)", abs(row["delta_psnr_db"]), "<=", GATE_PSNR_DB)
        for row in rows
        if row["precision"] != "float32"
    ] + [
        common.target(f"{row['precision']} |Δ SSIM|", abs(row["delta_ssim"]), "<=", GATE_SSIM)
        for row in rows
        if row["precision"] != "float32"
    ]
    common.print_targets(targets)
    config = {
        **source,
        "scenes": args.scenes,
        "images": len(images),
        "calibration_images": len(calibration),
        "convolutions_quantised": quantised,
        "rounds": args.rounds,
    }
    common.write_report(args.out, "int8", machine, config, {"rows": rows}, targets)
    print(f"wrote {args.out}")
    return {"rows": rows}


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
