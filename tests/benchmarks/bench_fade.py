"""FADE haze density: its cost per megapixel, and inference throughput with and without FADE running beside it.

    python -m tests.benchmarks.bench_fade --out runs/benchmarks/fade.json

Cost: ``service.density.fade_of_array`` on a real hazy photograph resized to each ``--megapixels`` size, in this
process on one core (median of ``--repeats``), and ``fade_of_bytes`` on a 12-megapixel JPEG (decoded at reduced
scale and shrunk to ``MAX_FADE_PIXELS`` first: the bounded cost the service pays for any accepted upload).

Throughput: the worker's arrangement in one process — an event loop, the model in a thread
(``asyncio.to_thread`` running the worker path, ``infer_image``, on SOTS scenes) and the service's FADE process
pool (``DensityScorer`` with ``--density-workers`` processes) — alternately without and with the pool kept busy
scoring 1-megapixel images, ``--rounds`` times. Reported: images/s of each, their ratio (median of per-round
ratios), and FADE scores/s achieved meanwhile. On a CPU the pool competes with torch's threads for cores unless
``--threads`` leaves it one; on a GPU machine the inference does not share its device with FADE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.config import Settings
from service.density import MAX_FADE_PIXELS, DensityScorer, fade_of_array, fade_of_bytes
from service.worker.runner import Runner, infer_image
from tests.benchmarks import common

REAL_HAZY = "real-hazy"
TWELVE_MP = (4000, 3000)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench_fade", description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, "fade")
    parser.add_argument("--photo", type=Path, help="photo for the cost part (default: the largest real-hazy photo)")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--repeats", type=int, default=3, help="FADE runs per size (median)")
    parser.add_argument("--images", type=int, default=2, help="SOTS scenes per throughput round")
    parser.add_argument("--size", default="sots", help="scene size for the throughput part: sots, 1080p or HxW")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (without FADE, with FADE)")
    parser.add_argument("--density-workers", type=int, default=Settings().density_workers)
    parser.add_argument("--load-megapixels", type=float, default=1.0, help="size of the images scored as load")
    parser.add_argument("--skip-12mp", action="store_true", help="leave out the 12-megapixel upload")
    return parser.parse_args(argv)


def _photo(args: argparse.Namespace) -> Image.Image:
    if args.photo is not None:
        path = args.photo
    else:
        candidates = [p for p in (args.data / REAL_HAZY).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"}]
        path = max(candidates, key=lambda p: _pixels(p))
    with Image.open(path) as opened:
        return opened.convert("RGB")


def _pixels(path: Path) -> int:
    with Image.open(path) as opened:
        return opened.width * opened.height


def resized(photo: Image.Image, megapixels: float) -> np.ndarray:
    """The photo resized (bicubic, aspect kept) to about ``megapixels``, as H×W×3 uint8."""
    scale = (megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
    size = (max(16, round(photo.width * scale)), max(16, round(photo.height * scale)))
    return np.asarray(photo.resize(size, Image.Resampling.BICUBIC))


# -- cost ----------------------------------------------------------------------------------------------------------
def measure_cost(photo: Image.Image, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Median FADE seconds and seconds per megapixel at each size, plus the 12 MP upload path."""
    fade_of_array(resized(photo, 0.05))  # loads FADE's reference models
    rows = []
    for megapixels in args.megapixels:
        rgb = resized(photo, megapixels)
        times = [common.timed(lambda rgb=rgb: fade_of_array(rgb), common.CPU)[1] for _ in range(args.repeats)]
        mp = rgb.shape[0] * rgb.shape[1] / 1e6
        rows.append(_cost_row(f"array {rgb.shape[1]}x{rgb.shape[0]}", mp, mp, statistics.median(times)))
    if not args.skip_12mp:
        buffer = io.BytesIO()
        Image.fromarray(resized(photo, 12.0)).resize(TWELVE_MP).save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        times = [common.timed(lambda: fade_of_bytes(data), common.CPU)[1] for _ in range(args.repeats)]
        mp = TWELVE_MP[0] * TWELVE_MP[1] / 1e6
        rows.append(_cost_row(f"upload {TWELVE_MP[0]}x{TWELVE_MP[1]} JPEG", mp, MAX_FADE_PIXELS / 1e6, min(times)))
    return rows


def _cost_row(name: str, megapixels: float, scored_megapixels: float, seconds: float) -> dict[str, Any]:
    return {
        "input": name,
        "megapixels": megapixels,
        "scored_megapixels": min(megapixels, scored_megapixels),
        "seconds": seconds,
        "s_per_megapixel": seconds / megapixels,
    }


# -- throughput ----------------------------------------------------------------------------------------------------
async def _infer_all(runner: Runner, images: list[np.ndarray], settings: Settings) -> float:
    """Seconds to dehaze every image through the worker path, in a thread as the worker does."""
    started = time.perf_counter()
    for image in images:
        await asyncio.to_thread(
            infer_image, runner, image, settings.tile_size, settings.tile_overlap, settings.bucket_multiple,
            settings.batch_size_on(runner.device.type),
        )  # fmt: skip
    common.sync(runner.device)
    return time.perf_counter() - started


async def _fade_load(scorer: DensityScorer, rgb: np.ndarray, workers: int, stop: asyncio.Event) -> int:
    """Keep every pool process scoring ``rgb`` until ``stop``; returns the scores completed."""
    done = 0

    async def lane() -> None:
        nonlocal done
        while not stop.is_set():
            await scorer.score_array(rgb)
            done += 1

    await asyncio.gather(*(lane() for _ in range(workers)))
    return done


async def _throughput(runner: Runner, images: list[np.ndarray], load: np.ndarray, args: argparse.Namespace) -> dict:
    settings = Settings()
    scorer = DensityScorer(args.density_workers)
    try:
        await scorer.warm_up()
        await _infer_all(runner, images[:1], settings)  # TorchScript specialises on the piece shapes
        alone, loaded, scores = [], [], []
        for index in range(args.rounds):
            alone.append(await _infer_all(runner, images, settings))
            stop = asyncio.Event()
            fade = asyncio.create_task(_fade_load(scorer, load, args.density_workers, stop))
            await asyncio.sleep(0.5)  # the pool is busy before the timed inference starts
            loaded.append(await _infer_all(runner, images, settings))
            stop.set()
            scores.append(await fade / (loaded[-1] + 0.5))
            print(f"  round {index}: alone {alone[-1]:.2f} s, with FADE {loaded[-1]:.2f} s", file=sys.stderr)
    finally:
        scorer.close()
    n = len(images)
    return {
        "images_per_round": n,
        "images_per_s_alone": statistics.median(n / s for s in alone),
        "images_per_s_with_fade": statistics.median(n / s for s in loaded),
        "ratio_with_to_without": statistics.median(a / b for a, b in zip(alone, loaded, strict=True)),
        "fade_scores_per_s_meanwhile": statistics.median(scores),
        "density_workers": args.density_workers,
        "load_image": f"{load.shape[1]}x{load.shape[0]}",
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both parts, print the tables, write the JSON; returns the results."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    machine = common.machine_info(device, args.threads)
    photo = _photo(args)
    cost = measure_cost(photo, args)
    pipeline, source = common.load_pipeline(args.weights)
    images, _ = common.prepare_images(common.load_sots(args.data, args.images), common.parse_size(args.size))
    with tempfile.TemporaryDirectory(prefix="bench_fade_") as tmp:
        runner = Runner.from_artifact(common.export_traced(pipeline, Path(tmp), source["variant"]), str(device))
        throughput = asyncio.run(_throughput(runner, images, resized(photo, args.load_megapixels), args))
    print(common.format_table(cost, COST_COLUMNS, title="FADE cost (one core):"))
    print(common.format_table([throughput], THROUGHPUT_COLUMNS, title="inference with and without FADE beside it:"))
    targets = [common.target("inference images/s with FADE / without", throughput["ratio_with_to_without"], ">=", 0.95)]
    common.print_targets(targets)
    config = {**source, "size": args.size, "rounds": args.rounds, "megapixels": args.megapixels}
    results = {"cost": cost, "throughput": throughput}
    notes = ["on a CPU, FADE's pool processes share the cores with torch unless --threads leaves them one"]
    common.write_report(args.out, "fade", machine, config, results, targets, notes)
    print(f"wrote {args.out}")
    return results


COST_COLUMNS = [
    common.Column("input", "input"),
    common.Column("megapixels", "MP", ".2f"),
    common.Column("scored_megapixels", "scored MP", ".2f"),
    common.Column("seconds", "s", ".3f"),
    common.Column("s_per_megapixel", "s/MP", ".3f"),
]
THROUGHPUT_COLUMNS = [
    common.Column("images_per_s_alone", "img/s alone", ".3f"),
    common.Column("images_per_s_with_fade", "img/s with FADE", ".3f"),
    common.Column("ratio_with_to_without", "ratio", ".3f"),
    common.Column("fade_scores_per_s_meanwhile", "FADE/s meanwhile", ".2f"),
    common.Column("density_workers", "FADE procs"),
]


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
