"""The benchmarks of ``tests/benchmarks`` still run: each ``main()`` on the tiny model, tiny images, a few seconds.

The figures are not checked (they mean nothing at this size), only that every benchmark finishes, writes its JSON
document with the expected keys and gives positive numbers. The data is a small folder in the SOTS and real-hazy
layouts made here, so the test needs neither the shared datasets nor trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.processes import REDIS_SERVER
from tests.service.live_server import tiny_weights

__all__ = ["tiny_weights"]  # the session fixture, re-exported so pytest finds it here

pytestmark = pytest.mark.slow

SMALL_TILES = {"DEHAZE_TILE_SIZE": "64", "DEHAZE_TILE_OVERLAP": "8"}


def _textured(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 7) % 256, (ys * 5) % 256, (xs + ys) % 256], axis=-1) * 0.6
    return Image.fromarray(np.clip(base + rng.integers(0, 90, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 72×96 SOTS-layout pairs and one real-hazy photo."""
    root = tmp_path_factory.mktemp("bench_data")
    for folder in ("sots-indoor-train/hazy", "sots-indoor-train/GT", "real-hazy"):
        (root / folder).mkdir(parents=True)
    for index, scene in enumerate(("1400", "1401")):
        _textured(72, 96, index).save(root / f"sots-indoor-train/GT/{scene}.png")
        _textured(72, 96, index + 10).save(root / f"sots-indoor-train/hazy/{scene}_1.png")
    _textured(120, 160, 20).save(root / "real-hazy/scene_input.png")
    return root


def _run(main: Any, out: Path, *argv: str) -> dict[str, Any]:
    main([*argv, "--threads", "1", "--device", "cpu", "--out", str(out)])
    document = json.loads(out.read_text())
    assert {"benchmark", "command", "machine", "config", "results", "targets"} <= set(document)
    assert document["machine"]["torch_threads"] == 1 and document["machine"]["cpu_cores"] >= 1
    return document


def _positive(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert row[key] is not None and row[key] > 0, (key, row)


def test_bench_model(tiny_weights: Path, bench_data: Path, tmp_path: Path) -> None:
    from tests.benchmarks import bench_model

    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--sizes", "sots", "48x64", "--images", "2"]
    args += ["--rounds", "1", "--batch-size", "2", "--tile-size", "64", "--tile-overlap", "8"]
    args += ["--scenes", "1400", "1401", "--dtypes", "fp32", "bf16"]
    document = _run(bench_model.main, tmp_path / "model.json", *args)
    rows = document["results"]["rows"]
    traced = {"traced_b1", "traced_batched", "service_path"}
    modes = {"eager_b1", "eager_b1_tuned", *traced, *(f"{mode}[bf16]" for mode in traced)}
    assert {r["mode"] for r in rows} == modes
    assert len(rows) == 16 and document["config"]["variant"] == "dcmpnet_tiny"
    # the baseline's child process computes what this process does: same weights, same outputs
    assert all(r["psnr_vs_eager_db"] >= 60 for r in rows if r["mode"] == "eager_b1_tuned")
    for row in rows:
        _positive(row, "images_per_s", "ratio_vs_eager", "gmac_per_image", "gmac_per_s", "peak_share")
    for row in rows:  # bfloat16 rows: measured against fp32 side by side, and not fp32's outputs
        if row["dtype"] == "bf16":
            _positive(row, "ratio_vs_fp32")
            assert row["psnr_vs_eager_db"] < 100
    assert {t["met"] for t in document["targets"]} <= {True, False}


def test_bench_variants(
    tiny_weights: Path, bench_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.checkpoint import save_checkpoint
    from model.pipeline import build_pipeline
    from tests.benchmarks import bench_variants

    second = tmp_path / "dcmpnet_t_tiny.pt"  # a second variant, as dcmpnet_t beside dcmpnet_small
    pipeline = build_pipeline("dcmpnet_t_tiny").eval()
    save_checkpoint(second, pipeline.phi, pipeline.psi, "dcmpnet_t_tiny", {"version": "test"})
    args = ["--weights", str(tiny_weights), str(second), "--data", str(bench_data), "--sizes", "sots", "48x64"]
    args += ["--images", "2", "--rounds", "1", "--scenes", "1400", "1401", "--dtypes", "fp32", "bf16"]
    document = _run(bench_variants.main, tmp_path / "variants.json", *args)
    rows = document["results"]["rows"]
    assert document["config"]["variants"] == ["dcmpnet_tiny", "dcmpnet_t_tiny"]
    assert {(r["variant"], r["dtype"]) for r in rows} == {
        (variant, dtype) for variant in ("dcmpnet_tiny", "dcmpnet_t_tiny") for dtype in ("fp32", "bf16")
    }
    assert len(rows) == 8
    for row in rows:
        _positive(row, "images_per_s", "latency_ratio", "params", "gmac_per_image", "psnr_vs_gt_db")
        if row["variant"] == "dcmpnet_tiny":  # the first file is the reference of its own dtype
            assert row["latency_ratio"] == 1.0
    assert [t["name"] for t in document["targets"]] == [
        f"{size} dcmpnet_t_tiny[{dtype}] / dcmpnet_tiny latency"
        for size in ("sots 96x72", "64x48")
        for dtype in ("fp32", "bf16")
    ]
    assert {t["met"] for t in document["targets"]} <= {True, False}
    assert all(t["op"] == "<=" and t["limit"] == 1.5 for t in document["targets"])
    table = capsys.readouterr().out
    assert "× dcmpnet_tiny latency" in table and "dcmpnet_t_tiny" in table
    assert "target 64x48 dcmpnet_t_tiny[bf16] / dcmpnet_tiny latency" in table


def test_bench_int8(tiny_weights: Path, bench_data: Path, tmp_path: Path) -> None:
    from tests.benchmarks import bench_int8

    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--images", "1", "--calibration", "1"]
    args += ["--rounds", "1", "--scenes", "1401", "--calibration-scenes", "1400"]
    document = _run(bench_int8.main, tmp_path / "int8.json", *args)
    rows = document["results"]["rows"]
    assert [r["precision"] for r in rows] == ["float32", "bfloat16", "int8"]
    assert document["config"]["convolutions_quantised"] > 0
    for row in rows:
        _positive(row, "images_per_s", "ratio_vs_fp32", "psnr_db", "ssim")
    assert rows[0]["delta_psnr_db"] == 0 and rows[2]["delta_psnr_db"] != 0  # int8 computes something else
    assert len(document["targets"]) == 4


def test_bench_kernel_cache(tiny_weights: Path, tmp_path: Path) -> None:
    from model.kernel_cache import DEFAULT_SHAPES, PRIMITIVES_PER_SHAPE
    from tests.benchmarks import bench_kernel_cache

    args = ["--weights", str(tiny_weights), "--shapes", "3", "--max-side", "64", "--dtypes", "float32"]
    document = _run(bench_kernel_cache.main, tmp_path / "kernel_cache.json", *args)
    rows = document["results"]["rows"]
    assert [(r["dtype"], r["cache"]) for r in rows] == [("float32", "onednn-default"), ("float32", "service")]
    assert rows[1]["capacity"] == str(DEFAULT_SHAPES * PRIMITIVES_PER_SHAPE)  # the child sized it as dehaze does
    assert len(document["config"]["shapes"]) == 3
    for row in rows:
        _positive(row, "pass1_s", "pass2_s", "pass3_s", "revisit_x", "first_x")


def test_bench_tiling(tiny_weights: Path, bench_data: Path, tmp_path: Path) -> None:
    from tests.benchmarks import bench_tiling

    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--images", "2", "--configs", "64:8", "96:0"]
    rows = _run(bench_tiling.main, tmp_path / "tiling.json", *args)["results"]["rows"]
    assert [r["config"] for r in rows] == ["whole", "64:8", "96:0"]
    assert rows[0]["psnr_vs_whole_db"] == 100.0 and rows[1]["pieces"] == 4
    for row in rows:
        _positive(row, "s_per_image", "pixel_ratio", "psnr_vs_whole_db", "psnr_vs_gt_db")


def test_bench_fade(tiny_weights: Path, bench_data: Path, tmp_path: Path) -> None:
    from tests.benchmarks import bench_fade

    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--megapixels", "0.01", "--repeats", "1"]
    args += ["--images", "1", "--rounds", "1", "--skip-12mp", "--load-megapixels", "0.01"]
    results = _run(bench_fade.main, tmp_path / "fade.json", *args)["results"]
    _positive(results["cost"][0], "seconds", "s_per_megapixel")
    _positive(results["throughput"], "images_per_s_alone", "images_per_s_with_fade", "ratio_with_to_without")


def test_bench_service(tiny_weights: Path, bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.benchmarks import bench_service

    for name, value in SMALL_TILES.items():
        monkeypatch.setenv(name, value)  # the servers and this process read the same settings
    backends = ["embedded", "redis1"] if Path(REDIS_SERVER).exists() else ["embedded"]
    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--concurrency", "2", "--requests", "2"]
    args += ["--overhead-requests", "1", "--parts", "overhead", "backends", "--backends", *backends]
    results = _run(bench_service.main, tmp_path / "service.json", *args)["results"]
    overhead = results["overhead"]
    assert overhead["latency_ms"]["p50_ms"] > 0 and overhead["model_ms"]["p50_ms"] > 0
    assert "overhead_share" in overhead and overhead["breakdown_ms_p50"]["server_compute"] > 0
    assert [r["backend"] for r in results["backends"]] == backends
    for row in results["backends"]:
        assert row["ok"] == 2
        _positive(row, "throughput_rps", "p50_ms", "p99_ms", "mean_forward_batch")


def test_bench_memory(tiny_weights: Path, bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.benchmarks import bench_memory

    for name, value in SMALL_TILES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEHAZE_MAX_BATCH_SIZE", "3")
    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--upload-size", "160", "120"]
    args += ["--batch-image-size", "64", "--cases", "upload", "full_batch"]
    rows = _run(bench_memory.main, tmp_path / "memory.json", *args)["results"]["rows"]
    assert [r["name"] for r in rows] == ["idle", "upload", "full_batch"]
    assert all(r["ok"] for r in rows)
    for row in rows:
        _positive(row, "peak_rss_mib", "rss_before_mib")
    assert rows[1]["forwards"] >= 1 and rows[2]["mean_forward_batch"] == 3


@pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")
def test_bench_startup(tiny_weights: Path, bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.benchmarks import bench_startup

    for name, value in SMALL_TILES.items():
        monkeypatch.setenv(name, value)
    args = ["--weights", str(tiny_weights), "--data", str(bench_data), "--rounds", "1", "--timeout", "300"]
    results = _run(bench_startup.main, tmp_path / "startup.json", *args)["results"]
    (row,) = results["workers"]
    assert row["exit_status"] == 0
    _positive(row, "to_metrics_s", "to_ready_s", "cpu_s_to_ready", "warm_up_s", "rss_mib")
    _positive(results["api"], "to_healthz_s", "to_readyz_s", "rss_mib")


@pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")
def test_bench_redis_queue(bench_data: Path, tmp_path: Path) -> None:
    from tests.benchmarks import bench_redis_queue

    out = tmp_path / "redis_queue.json"
    args = ["--sizes", "sots", "--fsync", "everysec", "--jobs", "4", "1", "1", "--count-jobs", "2", "--fill-jobs", "1"]
    bench_redis_queue.main([*args, "--clients", "2", "--data", str(bench_data), "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    commands = results["commands"]["per_job"]
    assert commands["evalsha"] == 1 and commands["xreadgroup"] >= 1 and commands["xack"] == 1  # submit, take, ack
    assert results["commands"]["total_per_job"] >= 10
    (row,) = results["rows"]
    _positive(row, "bytes_per_job", "jobs_per_s", "redis_cpu_ms_per_job", "aof_bytes_per_job")
    assert row["bytes_per_job"] >= row["payload_bytes"]
