"""``dehaze run INPUT... --out DIR``: dehaze image files and folders offline, with a progress bar.

The same functions as the service do the work (decoding with limits, the worker's tiling, encoding), but the
model runs directly in this process: no queue, no HTTP. Optional outputs: depth maps (16-bit PNG) and a CSV of
FADE haze densities before and after.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from service.commands._common import CommandError, load_settings
from service.config import Settings

if TYPE_CHECKING:
    from service.worker.runner import Runner

__all__ = ["IMAGE_SUFFIXES", "add_arguments", "find_images", "run"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, output folder and the optional outputs."""
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs (created if missing)")
    parser.add_argument("--depth", action="store_true", help="also write <name>_depth.png (16-bit grey)")
    parser.add_argument("--fade-csv", type=Path, help="write FADE before/after of every image to this CSV file")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: DEHAZE_WEIGHTS or the shipped weights)")
    parser.add_argument("--format", choices=sorted(_EXTENSIONS), default="png", help="output format (default png)")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")


def find_images(inputs: Iterable[Path], recursive: bool = False) -> list[Path]:
    """Every image file named or inside a named folder, sorted per folder, without duplicates.

    Raises:
        CommandError: when an input does not exist or nothing was found.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        if item.is_dir():
            candidates = item.rglob("*") if recursive else item.iterdir()
            for path in sorted(candidates):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(path.resolve())
        elif item.is_file():
            found.setdefault(item.resolve())
        else:
            raise CommandError(f"input not found: {item}")
    if not found:
        raise CommandError("no images found in the inputs")
    return list(found)


def _output_stems(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """Each path with a unique output stem (``name``, then ``name-2``, ... when names repeat)."""
    seen: dict[str, int] = {}
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        yield path, path.stem if count == 1 else f"{path.stem}-{count}"


def run(args: argparse.Namespace) -> int:
    """Dehaze every input; returns 0 when all succeeded, 1 when some failed, 2 on a usage error."""
    try:
        settings = load_settings(weights=args.weights)
        images = find_images(args.inputs, args.recursive)
        weights = settings.weights_path()
        if not weights.is_file():
            raise CommandError(f"weights file not found: {weights}")
    except CommandError as error:
        logger.error("%s", error)
        return 2
    from tqdm import tqdm

    from model.checkpoint import load_pipeline_from_weights
    from service.worker.runner import Runner

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    runner = Runner(load_pipeline_from_weights(weights), device=settings.device, dtype=settings.dtype)
    logger.info("running on %s (%s)", runner.device, runner.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    failures = 0
    for path, stem in tqdm(list(_output_stems(images)), desc="dehaze", unit="image"):
        try:
            rows.append(_process(path, stem, runner, settings, args))
        except Exception as error:  # one bad file must not stop a folder run
            failures += 1
            logger.error("%s: %s", path, error)
    if args.fade_csv is not None:
        _write_csv(args.fade_csv, rows)
    logger.info("%d of %d images written to %s", len(rows), len(images), args.out)
    return 1 if failures else 0


def _process(path: Path, stem: str, runner: Runner, settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    """Dehaze one file and write its outputs; returns its CSV row."""
    from service import imaging
    from service.density import fade_of_array, shrink_for_fade
    from service.worker.runner import infer_image

    rgb = imaging.decode_image(path.read_bytes(), settings.max_pixels)
    dehazed, depth = infer_image(
        runner,
        rgb,
        tile_size=settings.tile_size,
        tile_overlap=settings.tile_overlap,
        bucket_multiple=settings.bucket_multiple,
        max_batch_size=settings.batch_size_on(runner.device.type),
    )
    out = args.out / f"{stem}{_EXTENSIONS[args.format]}"
    out.write_bytes(imaging.encode_image(dehazed, args.format, settings.default_quality))
    if args.depth:
        (args.out / f"{stem}_depth.png").write_bytes(imaging.encode_depth(depth, colormap=False))
    row: dict[str, object] = {"input": str(path), "output": str(out), "width": rgb.shape[1], "height": rgb.shape[0]}
    if args.fade_csv is not None:
        for key, image in (("fade_in", rgb), ("fade_out", dehazed)):
            as_uint8 = Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
            row[key] = fade_of_array(np.asarray(shrink_for_fade(as_uint8, settings.density_max_pixels)))
    return row


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["input", "output", "width", "height", "fade_in", "fade_out"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
