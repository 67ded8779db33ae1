"""dehaze compare: input + one column per evaluated run, one row per photo."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import numpy as np
from PIL import Image

from commands.compare import run
from training.compare import compose

from .conftest import write_rgb


def _run_dir(root: Path, names: list[str], rng: np.random.Generator, h: int, w: int) -> Path:
    for name in names:
        write_rgb(root / "images" / f"{name}_dehazed.png", rng, h, w)
    return root


def test_grid_layout_and_missing_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_rgb(tmp_path / "photos" / "a.png", rng, 40, 80)
    write_rgb(tmp_path / "photos" / "b.jpg", rng, 60, 60)
    runs = [_run_dir(tmp_path / r, ["a", "b"], rng, 40, 80) for r in ("dcp", "net")]
    grid = compose(tmp_path / "photos", runs, ["DCP", "ours"], ["a", "b"], height=50, max_side=None)
    # columns: input, DCP, ours — each as wide as its widest tile at height 50 (a: 100 px, b's input: 50 px)
    assert grid.size == (100 * 3 + 4 * 2, 18 + 2 * (50 + 4))
    out = tmp_path / "grid.jpg"
    args = Namespace(
        data=tmp_path / "photos", runs=runs, labels=["DCP", "ours"], names=["a"], height=50, max_side=None, out=out
    )
    assert run(args) == 0 and Image.open(out).size[1] == 18 + 54
    assert run(Namespace(**{**vars(args), "names": ["zzz"]})) == 1
    assert run(Namespace(**{**vars(args), "labels": ["only one"]})) == 1
