"""Full-reference, no-reference and depth metrics of the network or of a baseline (``dehaze evaluate``).

``--data`` is either a RESIDE-layout folder (hazy/, GT/, optional depth/; metrics against GT) or a flat folder
of photos without GT (no-reference FADE only; non-image files are skipped with a warning). Every method is
scored with the same protocol (training.metrics): the full image, float RGB in [0, 1], no crop. The network is
``model.checkpoint.load_pipeline_from_weights``, run once per full image: DCMPNet (Ψ on the hazy input, Φ with
that depth) or CORUN (whose depth is derived from its transmission map, ``model.corun_pipeline``); ``method`` in
``metrics.json`` names the family. ``--baseline dcp`` is He et al.'s dark channel prior
(``model.physics.dcp_dehaze`` / ``dcp_depth``);
``--baseline lkd`` is the LKD-Net teacher (``--teacher``: a released weights name or file; default LKD-s ITS), whose
depth is the physics pseudo-depth of its output (``training.pseudo_depth``: −ln t from the input and the output).
``--baseline dehazeformer`` is a trained DehazeFormer (``--dehazeformer``: its ``.pth``; default the RESIDE-ITS
DehazeFormer-T in ``../shared/pretrained``), run as the warm-started Φ of ``dcmpnet_t``, which computes it exactly
(:mod:`model.warm_start`); its depth is the same pseudo-depth. It is the starting point of the ``dcmpnet_t`` weights.

Every image also gets tone statistics of the output against the input (``training.metrics.tone_shift``: the share
of pixels crushed to near-black, the shifts of mean R−G, B−G, luminance and of the darkest decile), because a lower
FADE can be bought by crushing shadows; the means and ``fade_ratio`` (mean FADE out / mean FADE in) are reported.
The no-reference quality score NIQE (``training.quality``; lower is better; it sees blur, noise and artefacts rather
than haze) is reported for input and output (``niqe_in``/``niqe_out``; empty for images under 192 px a side).
``--held-out-of CONFIG`` keeps only the photos of a flat folder that the training config held out of training
(``distill.real.exclude_names``), so a model is scored on photos it never saw.

Depth (folders with depth/): AbsRel and δ<1.25 of the returned depth after median scaling, pixels with true
depth 0 ignored. For the network the DCP depth is scored too (``baseline_depth_*``) as the reference point.

FADE is the service's computation (``training.metrics.fade`` calls ``service.density.fade_of_array``), bounded as
the service bounds it: an image whose size, with sides under 16 px padded, exceeds 1 MiP (1,048,576 px) is shrunk
(box filter) before scoring, so ``fade_in``/``fade_out`` cost about a second each at any size or aspect ratio and
equal the service's ``/density`` score of the same pixels; images within 1 MiP are scored at full size.

``--max-side N`` downscales every image (and its GT and depth, box filter) so its longer side is at most N before
anything runs: the network on a 3648×2344 photo takes minutes on a CPU. Scores on downscaled images are not
comparable with full-size scores; the default (``None``) keeps full size.

Writes ``metrics.json`` (means) and ``per_image.csv`` in ``--out``; ``--save-images`` also writes
``images/<name>_dehazed.png`` and ``images/<name>_depth.png`` (16-bit). The flags are those of
``commands.evaluate``; it exits 1 on failure.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.device import resolve_device
from model.precision import TORCH_DTYPES, resolve_dtype, with_precision
from service.codec import to_uint8, to_uint16
from training.data import PairRecord, list_images, load_depth, load_rgb, resize_max_side, scan_pairs, to_chw
from training.metrics import depth_errors, fade, mean_finite_psnr, psnr, ssim, tone_shift

__all__ = ["Sample", "evaluate"]

logger = logging.getLogger(__name__)

Method = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
TONE_FIELDS = ("crushed", "rg_shift", "bg_shift", "luminance_shift", "dark_decile_shift")
CSV_FIELDS = (
    "name",
    "height",
    "width",
    "psnr",
    "ssim",
    "fade_in",
    "fade_out",
    "niqe_in",
    "niqe_out",
    *TONE_FIELDS,
    "depth_absrel",
    "depth_delta1",
)
TEACHER_WEIGHTS = Path(__file__).resolve().parent / "teachers" / "weights"
DEHAZEFORMER_T = (
    Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "dehazeformer-t-its" / "dehazeformer-t.pth"
)


class Sample:
    """One evaluation image: hazy input and, when known, GT and true depth (H×W×C float32 arrays)."""

    def __init__(self, name: str, hazy: np.ndarray, clear: np.ndarray | None, depth: np.ndarray | None) -> None:
        self.name, self.hazy, self.clear, self.depth = name, hazy, clear, depth


def _load_pair(rec: PairRecord, max_side: int | None) -> Sample:
    hazy, clear = (resize_max_side(load_rgb(p), max_side) for p in (rec.hazy, rec.clear))
    depth = None if rec.depth is None else resize_max_side(load_depth(rec.depth), max_side)
    return Sample(rec.name, hazy, clear, depth)


def _load_photo(path: Path, max_side: int | None) -> Sample:
    return Sample(path.stem, resize_max_side(load_rgb(path), max_side), None, None)


def _held_out_names(config: Path) -> set[str]:
    from training.config import load_config

    cfg = load_config(config)
    if cfg.distill is None or cfg.distill.real is None or not cfg.distill.real.exclude_names:
        raise ValueError(f"{config} holds no real photos out of training (distill.real.exclude_names)")
    return set(cfg.distill.real.exclude_names)


def _samples(
    data: Path, scenes: Sequence[str] | None, limit: int | None, max_side: int | None, keep: set[str] | None = None
) -> tuple[list[Callable[[], Sample]], bool]:
    """Loaders of the samples (images are read one at a time) and whether the folder is RESIDE-layout."""
    if (data / "hazy").is_dir() and (data / "GT").is_dir():
        if keep is not None:
            raise ValueError("--held-out-of selects photos of a flat folder; use --scenes for a RESIDE folder")
        return [partial(_load_pair, r, max_side) for r in scan_pairs(data, scenes=scenes)[:limit]], True
    if scenes is not None:
        raise ValueError(f"--scenes needs a RESIDE-layout folder (hazy/ and GT/), {data} is a flat folder")
    paths = [p for p in list_images(data) if keep is None or p.stem in keep][:limit]
    if not paths:
        raise ValueError(f"no images in {data}")
    return [partial(_load_photo, p, max_side) for p in paths], False


def _dcp_method(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from model.physics import dcp_dehaze, dcp_depth

    dehazed, _ = dcp_dehaze(img)
    return dehazed.clamp(0, 1), dcp_depth(img)


def _identity_method(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hazy input itself (the table's "no processing" row); it has no depth (a constant, left out of means)."""
    return img, torch.zeros_like(img[:, :1])


def _teacher_method(teacher: str) -> tuple[Method, str]:
    from training.pseudo_depth import pseudo_depth
    from training.teachers.lkd import LKDTeacher

    path = Path(teacher) if teacher.endswith(".pth") else TEACHER_WEIGHTS / f"{teacher}.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"LKD-Net weights not found: {path} (names: lkd-s-its, lkd-s-ots, lkd-t-its, lkd-t-ots)"
        )
    net = LKDTeacher.from_file(path)

    def method(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = net(img.cpu())
        return out.to(img.device), pseudo_depth(img.cpu(), out).depth.to(img.device)

    return method, str(path)


def _dehazeformer_method(path: Path) -> tuple[Method, str]:
    """A DehazeFormer-T checkpoint as a method: ``dcmpnet_t``'s Φ warm-started from it (exactly that network)."""
    from model.dcmpnet import DCMPNet
    from model.pipeline import pad_to_min_size
    from model.variants import get_variant
    from model.warm_start import warm_start_phi
    from training.pseudo_depth import pseudo_depth

    if not Path(path).is_file():
        raise FileNotFoundError(f"DehazeFormer weights not found: {path}")
    phi = DCMPNet(get_variant("dcmpnet_t").phi)
    warm_start_phi(phi, path)
    phi.eval()

    def method(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = img.cpu()
        pad = pad_to_min_size(x, phi.min_size)
        out = phi(pad, torch.zeros_like(pad[:, :1]))[..., : x.shape[-2], : x.shape[-1]].clamp(0.0, 1.0)
        return out.to(img.device), pseudo_depth(x, out).depth.to(img.device)

    return method, str(path)


def _network_method(weights: Path | None, device: torch.device, dtype: str) -> tuple[Method, str, str]:
    """The network of a weights file as a method, the file's path, and the model family (the method's name).

    ``dtype`` is resolved as the service resolves it (``model.precision``): a bfloat16 copy on the CPU, autocast
    on CUDA.
    """
    from model.checkpoint import DEFAULT_WEIGHTS, load_pipeline_from_weights
    from model.corun_pipeline import CorunPipeline

    path = weights if weights is not None else DEFAULT_WEIGHTS
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    network = load_pipeline_from_weights(path)
    family = "corun" if isinstance(network, CorunPipeline) else "dcmpnet"
    pipeline = with_precision(network, dtype, device.type).to(device).eval()
    autocast = device.type == "cuda" and dtype != "float32"

    def method(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cuda", dtype=TORCH_DTYPES[dtype], enabled=autocast):
            return pipeline(img)

    return method, str(path), family


def _save_images(folder: Path, name: str, dehazed: torch.Tensor, depth: torch.Tensor) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = to_uint8(dehazed[0].permute(1, 2, 0).float().cpu().numpy())
    Image.fromarray(rgb).save(folder / f"{name}_dehazed.png")
    d16 = to_uint16(depth[0, 0].float().cpu().numpy())
    Image.fromarray(d16).save(folder / f"{name}_depth.png")


def _score(sample: Sample, dehazed: torch.Tensor, depth: torch.Tensor | None) -> dict:
    row: dict = {"name": sample.name, "height": sample.hazy.shape[0], "width": sample.hazy.shape[1]}
    out = dehazed[0].float().cpu()
    row["fade_in"] = fade(sample.hazy)
    row["fade_out"] = fade(out)
    row["niqe_in"], row["niqe_out"] = _niqe_or_none(sample.hazy), _niqe_or_none(out.permute(1, 2, 0).numpy())
    row.update(tone_shift(sample.hazy, out)._asdict())
    if sample.clear is not None:
        row["psnr"] = psnr(out, sample.clear)
        row["ssim"] = ssim(out, sample.clear)
    if sample.depth is not None and depth is not None:
        row["depth_absrel"], row["depth_delta1"] = _depth_or_none(sample.name, depth[0].float().cpu(), sample.depth)
    return row


def _niqe_or_none(rgb: np.ndarray) -> float | None:
    """NIQE (lower is better; ``training.quality``), or ``None`` for images too small for its patches."""
    from training.quality import NiqeScorer

    try:
        return NiqeScorer()(np.asarray(rgb, dtype=np.float32))
    except ValueError:
        return None


def _depth_or_none(name: str, pred: torch.Tensor, true: np.ndarray) -> tuple[float | None, float | None]:
    """Depth errors, or ``(None, None)`` with a warning when no scale can be fitted (e.g. an all-zero depth)."""
    try:
        return depth_errors(pred.clamp_min(0), true)
    except ValueError as err:
        logger.warning("%s: depth metrics undefined (%s); left out of the means", name, err)
        return None, None


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    return mean_finite_psnr(vals) if key == "psnr" else float(np.mean(vals))


@torch.inference_mode()
def evaluate(
    data: Path,
    out: Path,
    weights: Path | None = None,
    baseline: str | None = None,
    teacher: str = "lkd-s-its",
    dehazeformer: Path = DEHAZEFORMER_T,
    held_out_of: Path | None = None,
    save_images: bool = False,
    scenes: Sequence[str] | None = None,
    limit: int | None = None,
    max_side: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
) -> dict:
    """Evaluates a method on a folder and writes ``metrics.json`` and ``per_image.csv``.

    Args:
        data: RESIDE-layout folder or flat folder of photos.
        out: Output folder (created).
        weights: Checkpoint for the network (default: ``model.checkpoint.DEFAULT_WEIGHTS``).
        baseline: ``"dcp"`` for the dark channel prior, ``"lkd"`` for the LKD-Net teacher, ``"dehazeformer"`` for
            the DehazeFormer-T that ``dcmpnet_t`` starts from, ``"none"`` for the
            unprocessed input; then ``weights`` must be ``None``.
        teacher: With ``baseline="lkd"``: a released weights name (``lkd-s-its`` ...) or a ``.pth`` file.
        dehazeformer: With ``baseline="dehazeformer"``: the DehazeFormer-T ``.pth``.
        held_out_of: Flat folders only: keep the photos this training config held out of training.
        save_images: Also write the outputs.
        scenes: RESIDE folders only: keep these scenes (``None``: all).
        limit: Only the first N images (sorted by name).
        max_side: Downscale so the longer side is at most this (see the module docstring).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        dtype: The network's precision (``model.precision.DTYPES``; ``auto`` as the service picks it). The default
            is float32, the reference every other precision is gated against.

    Returns:
        The metrics written to ``metrics.json``.
    """
    if baseline is not None and weights is not None:
        raise ValueError("give either --weights or --baseline, not both")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if max_side is not None and max_side < 8:
        raise ValueError(f"--max-side must be >= 8, got {max_side}")
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"not a folder: {data}")
    dev = resolve_device(device)
    dtype = resolve_dtype(dtype, dev.type)
    method: Method
    weights_name: str | None
    if baseline == "dcp":
        method, method_name, weights_name = _dcp_method, "dcp", None
    elif baseline == "none":
        method, method_name, weights_name = _identity_method, "none", None
    elif baseline == "lkd":
        method, weights_name = _teacher_method(teacher)
        method_name = "lkd"
    elif baseline == "dehazeformer":
        method, weights_name = _dehazeformer_method(dehazeformer)
        method_name = "dehazeformer"
    else:
        method, weights_name, method_name = _network_method(weights, dev, dtype)
    keep = _held_out_names(held_out_of) if held_out_of is not None else None
    loaders, paired = _samples(data, scenes, limit, max_side, keep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, baseline_depth = [], []
    t0 = time.monotonic()
    for i, load in enumerate(loaders):
        sample = load()
        x = to_chw(sample.hazy)[None].to(dev)
        dehazed, depth = method(x)
        row = _score(sample, dehazed, None if method_name == "none" else depth)
        if sample.depth is not None and method_name in ("dcmpnet", "corun"):
            base = _depth_or_none(sample.name, _dcp_method(x.cpu())[1][0], sample.depth)
            if base[0] is not None:
                baseline_depth.append(base)
        rows.append(row)
        if save_images:
            _save_images(out / "images", sample.name, dehazed, depth)
        logger.info("[%d/%d] %s %s", i + 1, len(loaders), sample.name, _brief(row))
    metrics: dict = {
        "method": method_name,
        "weights": weights_name,
        "dtype": dtype if method_name in ("dcmpnet", "corun") else None,
        "data": str(data),
        "paired": paired,
        "n_images": len(rows),
        "max_side": max_side,
        **{k: _mean(rows, k) for k in ("psnr", "ssim", "fade_in", "fade_out", "niqe_in", "niqe_out", *TONE_FIELDS)},
        "seconds": round(time.monotonic() - t0, 3),
    }
    if metrics["fade_in"]:
        metrics["fade_ratio"] = metrics["fade_out"] / metrics["fade_in"]
    if any("depth_absrel" in r for r in rows):
        metrics["depth_absrel"] = _mean(rows, "depth_absrel")
        metrics["depth_delta1"] = _mean(rows, "depth_delta1")
    if baseline_depth:
        metrics["baseline_depth_absrel"] = float(np.mean([b[0] for b in baseline_depth]))
        metrics["baseline_depth_delta1"] = float(np.mean([b[1] for b in baseline_depth]))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    _write_csv(out / "per_image.csv", rows)
    logger.info("wrote %s: %s", out / "metrics.json", _brief(metrics))
    return metrics


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in CSV_FIELDS})


def _cell(v: object) -> object:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.6f}"
    return "" if v is None else v


def _brief(row: dict) -> str:
    keys = ("psnr", "ssim", "fade_in", "fade_out", "depth_absrel", "depth_delta1")
    return " ".join(f"{k}={row[k]:.4f}" for k in keys if isinstance(row.get(k), float))
