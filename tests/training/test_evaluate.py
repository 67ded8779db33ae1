"""dehaze evaluate on 2 SOTS scenes (tiny network checkpoint and DCP) and on a flat folder."""

from __future__ import annotations

import csv
import json
import logging
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from commands.evaluate import run
from tests.training.conftest import write_rgb
from training.evaluate import evaluate

KEYS = {"psnr", "ssim", "fade_in", "fade_out", "n_images", "depth_absrel", "depth_delta1", "method", "weights"}


def _rows(out: Path) -> list[dict]:
    with (out / "per_image.csv").open() as f:
        return list(csv.DictReader(f))


def test_network_on_two_scenes(tmp_path: Path, sots_small: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "net"
    args = Namespace(
        data=sots_small,
        weights=tiny_checkpoint,
        baseline=None,
        teacher="lkd-s-its",
        held_out_of=None,
        dtype="float32",
        out=out,
        save_images=True,
        scenes=None,
        limit=2,
        max_side=None,
        device="cpu",
    )
    assert run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= KEYS and metrics["n_images"] == 2 and metrics["method"] == "dcmpnet"
    assert "baseline_depth_absrel" in metrics
    assert 0 < metrics["ssim"] <= 1 and np.isfinite(metrics["psnr"])
    rows = _rows(out)
    assert [r["name"] for r in rows] == ["1400_5", "1401_5"] and all(r["psnr"] and r["fade_out"] for r in rows)
    assert (out / "images" / "1400_5_dehazed.png").is_file() and (out / "images" / "1400_5_depth.png").is_file()


def test_the_network_in_bfloat16_is_scored_beside_float32(
    tmp_path: Path, sots_small: Path, tiny_checkpoint: Path
) -> None:
    """``--dtype`` (the quality gate of a precision): other outputs than float32, recorded in metrics.json."""
    runs = {
        dtype: evaluate(sots_small, tmp_path / dtype, weights=tiny_checkpoint, limit=2, device="cpu", dtype=dtype)
        for dtype in ("float32", "bfloat16")
    }
    assert [runs[d]["dtype"] for d in runs] == ["float32", "bfloat16"]
    assert runs["bfloat16"]["psnr"] != runs["float32"]["psnr"]
    assert abs(runs["bfloat16"]["psnr"] - runs["float32"]["psnr"]) < 1.0
    assert evaluate(sots_small, tmp_path / "dcp", baseline="dcp", limit=1, device="cpu")["dtype"] is None


def test_dcp_baseline_on_two_scenes(tmp_path: Path, sots_small: Path) -> None:
    metrics = evaluate(sots_small, tmp_path / "dcp", baseline="dcp", limit=2, device="cpu")
    assert set(metrics) >= KEYS and metrics["method"] == "dcp" and metrics["weights"] is None
    assert metrics["fade_out"] < metrics["fade_in"]  # DCP removes haze
    assert len(_rows(tmp_path / "dcp")) == 2


def test_scenes_select_a_split_and_need_a_reside_folder(tmp_path: Path, sots_small: Path) -> None:
    metrics = evaluate(sots_small, tmp_path / "split", baseline="dcp", scenes=["1402"], device="cpu")
    assert metrics["n_images"] == 1 and [r["name"] for r in _rows(tmp_path / "split")] == ["1402_5"]
    with pytest.raises(ValueError, match="scenes not found"):
        evaluate(sots_small, tmp_path / "none", baseline="dcp", scenes=["1499"], device="cpu")
    photos = tmp_path / "photos"
    write_rgb(photos / "a.png", np.random.default_rng(0), 40, 64)
    with pytest.raises(ValueError, match="RESIDE-layout"):
        evaluate(photos, tmp_path / "flat", baseline="dcp", scenes=["1402"], device="cpu")


def test_flat_folder_skips_non_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    photos = tmp_path / "photos"
    write_rgb(photos / "a.png", np.random.default_rng(0), 40, 64)
    (photos / "readme.txt").parent.mkdir(exist_ok=True)
    (photos / "readme.txt").write_text("x")
    with caplog.at_level(logging.WARNING):
        metrics = evaluate(photos, tmp_path / "out", baseline="dcp", max_side=32, device="cpu")
    assert "readme.txt" in caplog.text
    assert metrics["n_images"] == 1 and metrics["psnr"] is None and "depth_absrel" not in metrics
    assert _rows(tmp_path / "out")[0]["width"] == "32"


def test_failure_exit_code(tmp_path: Path) -> None:
    args = Namespace(
        data=tmp_path / "missing",
        weights=None,
        baseline="dcp",
        teacher="lkd-s-its",
        held_out_of=None,
        dtype="float32",
        out=tmp_path / "o",
        save_images=False,
        scenes=None,
        limit=None,
        max_side=None,
        device="cpu",
    )
    assert run(args) == 1


def test_teacher_baseline_beats_dcp_and_reports_tones(tmp_path: Path, sots_small: Path) -> None:
    lkd = evaluate(sots_small, tmp_path / "lkd", baseline="lkd", teacher="lkd-t-its", limit=2, device="cpu")
    dcp = evaluate(sots_small, tmp_path / "dcp", baseline="dcp", limit=2, device="cpu")
    assert lkd["method"] == "lkd" and lkd["weights"].endswith("lkd-t-its.pth")
    assert lkd["psnr"] > dcp["psnr"] + 3  # a RESIDE-trained network against a 2009 prior on RESIDE haze
    assert {"crushed", "rg_shift", "bg_shift", "luminance_shift", "dark_decile_shift", "fade_ratio"} <= set(lkd)
    assert lkd["depth_absrel"] is not None  # the physics pseudo-depth of the teacher's output
    assert 0 <= lkd["crushed"] <= 1 and lkd["fade_ratio"] == pytest.approx(lkd["fade_out"] / lkd["fade_in"])
    with pytest.raises(FileNotFoundError, match="lkd-s-its"):
        evaluate(sots_small, tmp_path / "x", baseline="lkd", teacher="lkd-q-its", device="cpu")


def test_held_out_of_keeps_only_the_photos_training_never_saw(tmp_path: Path) -> None:
    import yaml

    from training.config import REPO_ROOT

    photos = tmp_path / "photos"
    for name in ("a", "b", "c"):
        write_rgb(photos / f"{name}.png", np.random.default_rng(0), 40, 64)
    raw = yaml.safe_load((REPO_ROOT / "training" / "configs" / "distill_small.yaml").read_text())
    raw["distill"]["real"]["exclude_names"] = ["a", "c"]
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    metrics = evaluate(photos, tmp_path / "out", baseline="dcp", held_out_of=config, device="cpu")
    assert metrics["n_images"] == 2 and [r["name"] for r in _rows(tmp_path / "out")] == ["a", "c"]
    raw.pop("distill")
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="exclude_names"):
        evaluate(photos, tmp_path / "out2", baseline="dcp", held_out_of=config, device="cpu")


def test_no_reference_quality_is_reported_where_the_image_allows(tmp_path: Path) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    base = (rng.random((26, 33, 3)) * 255).astype(np.uint8)
    Image.fromarray(base).resize((264, 208), Image.Resampling.BICUBIC).save(photos / "big.png")
    write_rgb(photos / "small.png", rng, 40, 64)
    evaluate(photos, tmp_path / "none", baseline="none", device="cpu")
    rows = {r["name"]: r for r in _rows(tmp_path / "none")}
    assert rows["big"]["niqe_in"] and rows["big"]["niqe_in"] == rows["big"]["niqe_out"]  # identity: same score
    assert rows["small"]["niqe_in"] == ""  # under 192 px a side: no NIQE
    dcp = evaluate(photos, tmp_path / "dcp", baseline="dcp", device="cpu")
    assert dcp["niqe_out"] is not None and np.isfinite(dcp["niqe_out"])


def test_dehazeformer_baseline_is_the_warm_start_and_beats_dcp(tmp_path: Path, sots_small: Path) -> None:
    from commands.cli import main as dehaze
    from training.evaluate import DEHAZEFORMER_T

    if not DEHAZEFORMER_T.is_file():
        pytest.skip(f"shared DehazeFormer-T weights not found at {DEHAZEFORMER_T}")
    dcp = evaluate(sots_small, tmp_path / "dcp", baseline="dcp", limit=2, device="cpu")
    assert dehaze(["evaluate", "--data", str(sots_small), "--baseline", "dehazeformer", "--limit", "2",
                   "--out", str(tmp_path / "df")]) == 0  # fmt: skip
    df = json.loads((tmp_path / "df" / "metrics.json").read_text())
    assert df["method"] == "dehazeformer" and df["weights"] == str(DEHAZEFORMER_T)
    assert df["psnr"] > dcp["psnr"] + 3 and df["depth_absrel"] is not None
    with pytest.raises(FileNotFoundError, match="DehazeFormer weights not found"):
        evaluate(sots_small, tmp_path / "x", baseline="dehazeformer", dehazeformer=tmp_path / "none.pth")
