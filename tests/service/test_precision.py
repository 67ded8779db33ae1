"""The CPU's reduced precision in the service: the runner, the artifact it loads, and `dehaze serve` end to end."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from model import precision
from model.export import artifact_dtype, ensure_artifact
from model.pipeline import build_pipeline
from service.config import Settings
from service.worker.runner import Runner, served_artifact
from tests.processes import dehaze_argv, env_without_dehaze, free_port, running, wait_ready
from tests.service.live_server import image_bytes, tiny_model, tiny_weights

__all__ = ["tiny_model", "tiny_weights"]  # the session fixtures, re-exported for pytest


def test_an_eager_module_runs_in_bfloat16_on_the_cpu_when_asked() -> None:
    torch.manual_seed(0)
    pipeline = build_pipeline("dcmpnet_tiny").eval()
    batch = np.random.default_rng(0).random((2, 24, 40, 3), dtype=np.float32)
    reduced, reference = Runner(pipeline, "cpu", "bfloat16"), Runner(pipeline, "cpu", "float32")
    assert (reduced.dtype, reference.dtype) == ("bfloat16", "float32")
    (low, low_depth), (high, high_depth) = reduced.forward(batch), reference.forward(batch)
    assert low.dtype == np.float32 and low.shape == high.shape and low_depth.shape == high_depth.shape
    assert 0 < float(np.abs(low - high).max()) < 0.1


def test_the_runner_loads_only_an_artifact_of_the_precision_it_computes_in(
    tiny_model: tuple[Path, Path], tmp_path: Path
) -> None:
    weights, float32_artifact = tiny_model
    with pytest.raises(ValueError, match="export it with `dehaze export --dtype bfloat16`"):
        Runner.from_artifact(float32_artifact, "cpu", "bfloat16")
    bf16 = ensure_artifact(weights, tmp_path / "tiny.bfloat16.ts.pt", "bfloat16")
    runner = Runner.from_artifact(bf16, "cpu", "bfloat16")
    assert runner.dtype == "bfloat16" and runner.info["variant"] == "dcmpnet_tiny"
    dehazed, depth = runner.forward(np.zeros((1, 16, 24, 3), dtype=np.float32))
    assert dehazed.shape == (1, 16, 24, 3) and depth.shape == (1, 16, 24, 1)
    with pytest.raises(ValueError, match="computes in bfloat16"):
        Runner.from_artifact(bf16, "cpu", "float32")


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_auto_serves_the_bfloat16_artifact_only_on_a_cpu_with_native_bfloat16(
    native: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    settings = Settings(weights=tmp_path / "m.pt", device="cpu")
    expected = ("bfloat16", tmp_path / "m.bfloat16.ts.pt") if native else ("float32", tmp_path / "m.ts.pt")
    path, dtype = served_artifact(settings)
    assert (dtype, path) == expected


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", None], ids=["bfloat16", "auto"])
def test_serve_exports_and_serves_the_precision_it_resolves(
    dtype: str | None, tiny_weights: Path, tmp_path: Path
) -> None:
    """`dehaze serve` exports the artifact of the resolved precision beside the weights, serves it, says so in
    /metrics; ``auto`` resolves as ``model.precision`` does on this machine."""
    weights = Path(shutil.copy(tiny_weights, tmp_path / "dcmpnet_tiny.pt"))
    expected = dtype or precision.resolve_dtype("auto", "cpu")
    port = free_port()
    env = env_without_dehaze(
        DEHAZE_WEIGHTS=str(weights),
        DEHAZE_DEVICE="cpu",
        DEHAZE_TORCH_THREADS="1",
        DEHAZE_TILE_SIZE="128",
        DEHAZE_TILE_OVERLAP="16",
        **({"DEHAZE_DTYPE": dtype} if dtype else {}),
    )
    url = f"http://127.0.0.1:{port}"
    argv = dehaze_argv("serve", "--host", "127.0.0.1", "--port", str(port))
    with running(argv, tmp_path / "serve.log", env, grace_s=10) as server:
        wait_ready(lambda: httpx.get(f"{url}/readyz").status_code == 200, 120, "/readyz", [server])
        response = httpx.post(
            f"{url}/dehaze", files={"image": ("a.png", image_bytes(150, 70), "image/png")}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert Image.open(io.BytesIO(response.content)).size == (150, 70)
        metrics = httpx.get(f"{url}/metrics").text
    assert re.search(rf'^dehaze_model_info\{{[^}}]*dtype="{expected}"[^}}]*\}} 1\.0$', metrics, re.M), metrics
    artifact = weights.with_name("dcmpnet_tiny.ts.pt" if expected == "float32" else f"dcmpnet_tiny.{expected}.ts.pt")
    assert artifact_dtype(artifact) == expected
