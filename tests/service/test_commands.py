"""The service's subcommands: `dehaze run` end to end, and the clear errors of serve/api/worker."""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from commands.cli import main
from tests.processes import REPO, dehaze_argv, env_without_dehaze, free_port, running, wait_ready
from tests.service.live_server import image_bytes, live_server, model_settings, tiny_model, tiny_weights

__all__ = ["tiny_model", "tiny_weights"]  # the session fixture, re-exported for pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No DEHAZE_* variable from the caller's environment leaks into a command."""
    for name in list(os.environ):
        if name.startswith("DEHAZE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_run_dehazes_files_and_folders_with_depth_and_fade_csv(
    tmp_path: Path, tiny_weights: Path, clean_env: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(40, 30))
    (folder / "b.jpg").write_bytes(image_bytes(150, 70, fmt="JPEG"))  # larger than a tile: tiled
    (folder / "notes.txt").write_text("not an image")
    single = tmp_path / "c.webp"
    single.write_bytes(image_bytes(33, 21, fmt="WEBP"))
    out, table = tmp_path / "out", tmp_path / "fade.csv"
    clean_env.setenv("DEHAZE_TILE_SIZE", "64")
    clean_env.setenv("DEHAZE_TILE_OVERLAP", "16")

    argv = ["run", str(folder), str(single), "--out", str(out), "--depth", "--fade-csv", str(table)]
    assert main([*argv, "--weights", str(tiny_weights)]) == 0

    expected = {"a": (40, 30), "b": (150, 70), "c": (33, 21)}
    for stem, size in expected.items():
        dehazed, depth = Image.open(out / f"{stem}.png"), Image.open(out / f"{stem}_depth.png")
        assert dehazed.size == size and dehazed.mode == "RGB"
        assert depth.size == size and depth.mode.startswith("I;16")
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["input"]).stem for row in rows) == ["a", "b", "c"]
    assert all(float(row["fade_in"]) > 0 and float(row["fade_out"]) > 0 for row in rows)


def test_run_reports_a_missing_input(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["run", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == 2
    assert "input not found" in caplog.text


def run_command(tmp_path: Path, tiny_weights: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m commands run ARGS --weights TINY`` in a clean environment, output captured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEHAZE_")}
    env |= {"DEHAZE_TILE_SIZE": "64", "DEHAZE_TILE_OVERLAP": "16", "DEHAZE_TORCH_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "commands", "run", *args, "--weights", str(tiny_weights)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def assert_usage_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    """Exit 2 with one clear line naming the problem, and no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and needle in errors[0], done.stderr[-2000:]


@pytest.mark.parametrize("layout", ["same-folder", "same-file-dot", "csv-over-input"])
def test_run_refuses_to_overwrite_its_inputs_unless_told(tmp_path: Path, tiny_weights: Path, layout: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    original = image_bytes(40, 30)
    (photos / "a.png").write_bytes(original)
    args = {
        "same-folder": [str(photos), "--out", str(photos)],
        "same-file-dot": ["a.png", "--out", "."],
        "csv-over-input": [str(photos), "--out", str(tmp_path / "out"), "--fade-csv", str(photos / "a.png")],
    }[layout]
    cwd = photos if layout == "same-file-dot" else tmp_path
    assert_usage_error(run_command(cwd, tiny_weights, *args), "would replace an input")
    assert (photos / "a.png").read_bytes() == original

    if layout == "same-folder":
        done = run_command(cwd, tiny_weights, *args, "--overwrite")
        assert done.returncode == 0, done.stderr[-2000:]
        assert (photos / "a.png").read_bytes() != original
        assert Image.open(photos / "a.png").size == (40, 30)


@pytest.mark.parametrize("problem", ["out-is-a-file", "out-under-a-file", "csv-is-a-folder"])
def test_run_reports_an_impossible_output_in_one_line(tmp_path: Path, tiny_weights: Path, problem: str) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes(24, 16))
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "folder").mkdir()
    args, needle = {
        "out-is-a-file": (["--out", "taken"], "is a file"),
        "out-under-a-file": (["--out", "taken/sub"], "cannot create the output folder"),
        "csv-is-a-folder": (["--out", "out", "--fade-csv", "folder"], "is a folder"),
    }[problem]
    assert_usage_error(run_command(tmp_path, tiny_weights, "a.png", *args), needle)


def test_run_outputs_never_replace_each_other(
    tmp_path: Path, tiny_weights: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """``a_depth.png`` (an input) and the depth map of ``a.png`` would share a name: one of them moves aside."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(40, 30))
    (folder / "a_depth.png").write_bytes(image_bytes(24, 16))
    clean_env.setenv("DEHAZE_TILE_SIZE", "64")
    clean_env.setenv("DEHAZE_TILE_OVERLAP", "16")
    out = tmp_path / "out"
    assert main(["run", str(folder), "--out", str(out), "--depth", "--weights", str(tiny_weights)]) == 0
    names = sorted(path.name for path in out.iterdir())
    assert len(names) == 4 and "a.png" in names and "a_depth.png" in names
    sizes = {Image.open(out / name).size for name in names}
    assert sizes == {(40, 30), (24, 16)}


@pytest.mark.parametrize("command", ["api", "worker"])
def test_redis_commands_need_a_redis_url(
    command: str, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert main([command]) == 2
    assert "DEHAZE_REDIS_URL" in caplog.text


def test_serve_reports_missing_weights(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("DEHAZE_WEIGHTS", str(tmp_path / "nope.pt"))
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--port", "1"]) == 2
    assert "weights file not found" in caplog.text


def test_invalid_settings_are_reported_not_raised(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("DEHAZE_TILE_SIZE", "100")  # not a multiple of bucket_multiple
    with caplog.at_level(logging.ERROR):
        assert main(["api"]) == 2
    assert "invalid settings" in caplog.text


@pytest.mark.redis
@pytest.mark.slow
def test_worker_process_serves_the_api_and_drains_on_sigterm(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str
) -> None:
    """`dehaze worker` in its own process: metrics on its port, serves jobs of an API, exits 0 on SIGTERM."""
    weights, artifact = tiny_model
    metrics_port = free_port()
    env = env_without_dehaze(
        DEHAZE_REDIS_URL=redis_url,
        DEHAZE_WEIGHTS=str(weights),
        DEHAZE_ARTIFACT=str(artifact),
        DEHAZE_DEVICE="cpu",
        DEHAZE_TORCH_THREADS="1",
        DEHAZE_WORKER_METRICS_PORT=str(metrics_port),
    )
    with running(dehaze_argv("worker"), tmp_path / "worker.log", env, grace_s=0) as worker:
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_ready(lambda: httpx.get(metrics).status_code == 200, 60, "metrics", [worker])
        settings = model_settings(tiny_model, redis_url=redis_url)
        with live_server(settings) as url:  # ready: the worker's heartbeat is visible through Redis
            response = httpx.post(
                f"{url}/dehaze", files={"image": ("a.png", image_bytes(41, 29), "image/png")}, timeout=60
            )
            assert response.status_code == 200, response.text
            assert Image.open(io.BytesIO(response.content)).size == (41, 29)
        assert "dehaze_batch_size_count 1.0" in httpx.get(metrics).text
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert "SIGTERM received" in (tmp_path / "worker.log").read_text()


def test_log_level_comes_from_the_environment_and_the_flag_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "commands", "release", "--checkpoint", str(tmp_path / "no.pt"), "--out", "x"]

    def stderr(env_level: str | None, *flag: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEHAZE_")}
        if env_level is not None:
            env["DEHAZE_LOG_LEVEL"] = env_level
        argv = [*command[:3], *flag, *command[3:]]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 1
        return done.stderr

    assert "release failed" in stderr(None)
    assert "release failed" not in stderr("critical")
    assert "release failed" in stderr("critical", "--log-level", "error")
    clean_env.setenv("DEHAZE_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit) as exit_info:
        main(["release", "--checkpoint", "a", "--out", "b"])
    assert exit_info.value.code == 2
