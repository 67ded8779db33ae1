"""Packs the training data of a GPU run (``training/gpu_train.sh``) into a folder small enough to travel.

A lent GPU machine sees only the working tree, at most 64 MiB of it with what the GPU check carries (about 21 MiB
of wheels and redis-server), and the repo itself takes about 22 MiB. So the pack holds what
``training/configs/gpu_small.yaml`` reads, as compactly as the training allows:

* ``sots-train-clear/``: the clear images of the training scenes with their depth, a RESIDE-layout folder without
  ``hazy/`` (the run hazes them on the fly, as RESIDE made SOTS: A = 1, t = exp(−β·d)). The clear images are
  re-encoded as JPEG quality 95 without chroma subsampling (about 46 dB PSNR to the lossless originals, a tenth
  of the size); the depth maps are copied bit for bit (16-bit PNG).
* ``sots-val/``: the validation scenes, GT, hazy and depth, copied bit for bit (checkpoint selection must see
  exactly the images that ``dehaze evaluate`` sees).

* ``sots-fixture/``: scenes 1400-1402 (GT, hazy level 5, depth), centre-cropped to 96×96 as the tests' fixture
  crops them, so that the CUDA tests (``pytest -m gpu``, ``DEHAZE_TEST_SOTS``) run where ``../shared`` is absent.

The test scenes are not packed: the released weights come back and are evaluated on this machine.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from training.data import list_images, scan_pairs, scene_of

__all__ = ["main", "pack"]

logger = logging.getLogger(__name__)

JPEG_QUALITY = 95
DEFAULT_HELD_OUT = ("1430", "1431", "1432", "1433", "1434")
FIXTURE_SCENES = ("1400", "1401", "1402")
FIXTURE_SIDE = 96


def pack(
    source: Path,
    dest: Path,
    val_scenes: Sequence[str],
    held_out: Sequence[str],
    max_train_scenes: int | None = None,
) -> int:
    """Writes ``dest/sots-train-clear`` and ``dest/sots-val`` from a RESIDE-layout folder with depth.

    Args:
        source: E.g. ``../shared/datasets/sots-indoor-train``.
        dest: The pack's folder (replaced).
        val_scenes: Scenes copied whole into ``sots-val``.
        held_out: Scenes never packed for training (validation and test).
        max_train_scenes: Pack only the first this many training scenes (a dry run's small pack).

    Returns:
        The pack's size in bytes.
    """
    pairs = scan_pairs(source)
    if any(p.depth is None for p in pairs):
        raise ValueError(f"{source} has no depth/: the run needs true depth to haze the clear images")
    if dest.exists():
        shutil.rmtree(dest)
    train_scenes = sorted({p.scene for p in pairs} - set(held_out))[:max_train_scenes]
    clear_dir = dest / "sots-train-clear"
    for sub in ("GT", "depth"):
        (clear_dir / sub).mkdir(parents=True)
    by_scene = {p.scene: p for p in pairs}
    for scene in train_scenes:
        rec = by_scene[scene]
        assert rec.depth is not None  # every pair has depth (checked above)
        with Image.open(rec.clear) as im:
            im.convert("RGB").save(clear_dir / "GT" / f"{scene}.jpg", quality=JPEG_QUALITY, subsampling=0)
        shutil.copy2(rec.depth, clear_dir / "depth" / rec.depth.name)
    val_dir = dest / "sots-val"
    for sub in ("GT", "hazy", "depth"):
        (val_dir / sub).mkdir(parents=True)
        for path in list_images(source / sub):
            if scene_of(path.stem) in val_scenes:
                shutil.copy2(path, val_dir / sub / path.name)
    _pack_fixture(source, dest / "sots-fixture")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    logger.info(
        "packed %d training scenes and validation scenes %s into %s: %.1f MiB",
        len(train_scenes),
        list(val_scenes),
        dest,
        size / 2**20,
    )
    return size


def _pack_fixture(source: Path, dest: Path, side: int = FIXTURE_SIDE) -> None:
    """The tests' three SOTS scenes, centre crops of ``side`` pixels, losslessly in the original names."""
    for scene in FIXTURE_SCENES:
        for sub, name in (("GT", f"{scene}.webp"), ("hazy", f"{scene}_5.webp"), ("depth", f"{scene}.png")):
            (dest / sub).mkdir(parents=True, exist_ok=True)
            with Image.open(source / sub / name) as im:
                left, top = (im.width - side) // 2, (im.height - side) // 2
                crop = im.crop((left, top, left + side, top + side))
                params: dict[str, Any] = {"lossless": True} if name.endswith(".webp") else {}
                crop.save(dest / sub / name, **params)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.gpu_pack --source DIR --dest DIR [--max-train-scenes N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/datasets/sots-indoor-train"))
    parser.add_argument("--dest", type=Path, default=Path(".gpu_data"))
    parser.add_argument("--val-scenes", nargs="+", default=["1430", "1431"])
    parser.add_argument("--held-out", nargs="+", default=list(DEFAULT_HELD_OUT))
    parser.add_argument("--max-train-scenes", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pack(args.source, args.dest, args.val_scenes, args.held_out, args.max_train_scenes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
