"""``dehaze run INPUT... --out DIR``: dehaze image files and folders offline, with a progress bar.

The same functions as the service do the work (decoding with limits, the worker's tiling, encoding), but the
model runs directly in this process: no queue, no HTTP. Optional outputs: depth maps (16-bit PNG) and a CSV of
FADE haze densities before and after.

Every output path is planned and checked before the model loads, so that a usage error costs nothing and is one
clear line with exit status 2: an output folder that is a file or cannot be created or written, a CSV path that is
a folder, and any output that would replace one of the inputs (refused unless ``--overwrite``: running on a folder
with ``--out`` the same folder must not silently destroy the photos). Outputs never replace each other either
(``a_depth.png`` of ``a.png`` against a dehazed ``a_depth.png``): repeated names get ``-2``, ``-3``, ...
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commands._common import CommandError, load_settings
from service.config import PRECISIONS, Settings

if TYPE_CHECKING:
    from service.worker.runner import Runner

__all__ = [
    "HELP",
    "IMAGE_SUFFIXES",
    "Planned",
    "add_arguments",
    "check_outputs",
    "find_images",
    "plan_outputs",
    "prepare_output_folder",
    "run",
]

HELP = "dehaze files and folders offline"

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
    parser.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default=None,
        help="compute precision (default: DEHAZE_DTYPE, else auto: bfloat16 on a CPU with native bfloat16)",
    )
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")
    parser.add_argument("--overwrite", action="store_true", help="allow outputs to replace input files")


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


@dataclass(frozen=True)
class Planned:
    """One input and the files written for it."""

    source: Path
    image: Path
    depth: Path | None


def plan_outputs(images: list[Path], out: Path, extension: str, depth: bool) -> list[Planned]:
    """The output files of every input: ``<stem><ext>`` (and ``<stem>_depth.png``), all distinct.

    A stem whose files are already planned gets ``-2``, ``-3``, ... so that no output replaces another.
    """
    taken: set[str] = set()
    planned = []
    for path in images:
        count = 1
        while True:
            stem = path.stem if count == 1 else f"{path.stem}-{count}"
            names = [f"{stem}{extension}"] + ([f"{stem}_depth.png"] if depth else [])
            if not any(name in taken for name in names):
                break
            count += 1
        taken.update(names)
        planned.append(Planned(path, out / names[0], out / names[1] if depth else None))
    return planned


def prepare_output_folder(out: Path) -> None:
    """Create the output folder, or check the existing one.

    Raises:
        CommandError: ``out`` is a file, or cannot be created or written to.
    """
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file; it must be a folder (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the output folder {out}: {error.strerror or error}") from error
    if not os.access(out, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write to the output folder {out}: permission denied")


def check_outputs(planned: list[Planned], fade_csv: Path | None, overwrite: bool) -> None:
    """Refuse a CSV path that is a folder, and outputs that would replace an input (unless ``overwrite``).

    Raises:
        CommandError: with the first conflict found.
    """
    if fade_csv is not None and fade_csv.is_dir():
        raise CommandError(f"--fade-csv {fade_csv} is a folder; it must be a file path")
    if overwrite:
        return
    inputs = {item.source.resolve() for item in planned}
    outputs = [path for item in planned for path in (item.image, item.depth) if path is not None]
    outputs += [fade_csv] if fade_csv is not None else []
    for path in outputs:
        if path.resolve() in inputs or any(_same_file(path, source) for source in inputs if path.exists()):
            raise CommandError(f"the output {path} would replace an input file; choose another --out or --overwrite")


def _same_file(a: Path, b: Path) -> bool:
    """True when both paths name one existing file (hard links included)."""
    try:
        return a.samefile(b)
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    """Dehaze every input; returns 0 when all succeeded, 1 when some failed, 2 on a usage error."""
    try:
        settings = load_settings(weights=args.weights, dtype=args.dtype)
        images = find_images(args.inputs, args.recursive)
        weights = settings.weights_path()
        if not weights.is_file():
            raise CommandError(f"weights file not found: {weights}")
        planned = plan_outputs(images, args.out, _EXTENSIONS[args.format], args.depth)
        check_outputs(planned, args.fade_csv, args.overwrite)
        prepare_output_folder(args.out)
        if args.fade_csv is not None:
            prepare_output_folder(args.fade_csv.parent)
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
    rows: list[dict[str, object]] = []
    failures = 0
    for item in tqdm(planned, desc="dehaze", unit="image"):
        try:
            rows.append(_process(item, runner, settings, args))
        except Exception as error:  # one bad file must not stop a folder run
            failures += 1
            logger.error("%s: %s", item.source, error)
    if args.fade_csv is not None:
        _write_csv(args.fade_csv, rows)
    logger.info("%d of %d images written to %s", len(rows), len(images), args.out)
    return 1 if failures else 0


def _process(item: Planned, runner: Runner, settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    """Dehaze one file and write its outputs; returns its CSV row."""
    from service import codec
    from service.density import fade_of_array
    from service.worker.runner import infer_image

    rgb = codec.decode_image(item.source.read_bytes(), settings.max_pixels)
    dehazed, depth = infer_image(
        runner,
        rgb,
        tile_size=settings.tile_size,
        tile_overlap=settings.tile_overlap,
        bucket_multiple=settings.bucket_multiple,
        max_batch_size=settings.batch_size_on(runner.device.type),
    )
    item.image.write_bytes(codec.encode_image(dehazed, args.format, settings.default_quality))
    if item.depth is not None:
        item.depth.write_bytes(codec.encode_depth(depth, colormap=False))
    row: dict[str, object] = {
        "input": str(item.source),
        "output": str(item.image),
        "width": rgb.shape[1],
        "height": rgb.shape[0],
    }
    if args.fade_csv is not None:
        for key, image in (("fade_in", rgb), ("fade_out", dehazed)):  # 8 bits as the service's encoder rounds them
            row[key] = fade_of_array(codec.to_uint8(image), settings.density_max_pixels)  # shrunk to the bound inside
    return row


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["input", "output", "width", "height", "fade_in", "fade_out"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
