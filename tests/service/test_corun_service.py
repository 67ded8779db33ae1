"""CORUN served end to end: ``DEHAZE_WEIGHTS`` naming a CORUN checkpoint, over real TCP (uvicorn), both topologies.

Mirrors test_api_outputs.py for the second model family: one random-initialised ``corun_tiny`` checkpoint (saved in
a temporary folder, exported once per module; it records the licence GPL-3.0, so that a licence other than the
project's is seen served), one server per backend. The served outputs of an image larger than
a tile are compared with the worker's own path run eagerly (``infer_image``): the depth of ``/dehaze`` JSON is the
transmission-derived depth, stitched without seams. ``dehaze run`` with the same checkpoint closes the file.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from commands.cli import main
from model.checkpoint import load_pipeline_from_weights
from model.corun import create_corun
from model.corun_checkpoint import save_corun_checkpoint
from model.export import ensure_artifact, file_sha256
from service import codec
from service.worker.runner import infer_image
from tests.service.live_server import image_bytes, live_server, model_settings, redis_worker

TILE, OVERLAP = 128, 16  # model_settings' tiling


@pytest.fixture(scope="module")
def corun_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(weights, artifact): a random ``corun_tiny`` checkpoint under GPL-3.0 and its TorchScript export."""
    folder = tmp_path_factory.mktemp("corun_weights")
    torch.manual_seed(0)
    net, metadata = create_corun("corun_tiny"), {"licence": "GPL-3.0"}
    weights = save_corun_checkpoint(folder / "corun_tiny.pt", net, "corun_tiny", metadata)
    return weights, Path(ensure_artifact(weights, folder / "corun_tiny.ts.pt"))


@pytest.fixture(scope="module", params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def server(request: pytest.FixtureRequest, corun_model: tuple[Path, Path]) -> Iterator[str]:
    """The API serving CORUN on a free port, ready, in one of the two topologies."""
    if request.param == "embedded":
        with live_server(model_settings(corun_model, max_batch_wait_ms=50.0)) as url:
            yield url
        return
    redis_server = request.getfixturevalue("redis_server")
    redis_server.flush()
    settings = model_settings(corun_model, redis_url=redis_server.url, max_batch_wait_ms=50.0)
    with redis_worker(settings), live_server(settings) as url:
        yield url


def _post(url: str, path: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}{path}", files={"image": ("upload.png", data, "image/png")}, timeout=120)


def test_dehaze_returns_an_image_of_the_upload_size(server: str) -> None:
    response = _post(server, "/dehaze?format=jpeg", image_bytes(45, 37))
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("JPEG", (45, 37))


def test_json_names_corun_and_its_depth_is_the_transmission_depth(server: str, corun_model: tuple[Path, Path]) -> None:
    weights, _ = corun_model
    upload = image_bytes(300, 170, seed=3)  # larger than a tile on both sides: cut, run in a batch, stitched
    response = _post(server, "/dehaze?response=json", upload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "corun_tiny", "version": file_sha256(weights)[:12], "licence": "GPL-3.0"}
    dehazed = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))), dtype=np.float32) / 255
    depth_png = Image.open(io.BytesIO(base64.b64decode(body["depth"])))
    assert depth_png.mode.startswith("I;16") and depth_png.size == (300, 170)
    depth = np.asarray(depth_png, dtype=np.float32) / 65535

    rgb = codec.decode_image(upload, 10**7)
    with torch.inference_mode():
        want_image, want_depth = infer_image(load_pipeline_from_weights(weights), rgb, TILE, OVERLAP)
    assert np.abs(dehazed - want_image).max() <= 1.01 / 255  # one 8-bit step (traced vs eager rounding)
    assert np.abs(depth - want_depth).max() <= 2.01 / 65535  # H×W, as the worker stitches it
    assert 0 < depth.mean() < 1


def test_depth_endpoint_serves_the_derived_depth(server: str) -> None:
    grey = _post(server, "/depth", image_bytes(33, 47))
    assert grey.status_code == 200 and grey.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(grey.content))
    assert image.size == (33, 47) and image.mode.startswith("I;16")
    coloured = Image.open(io.BytesIO(_post(server, "/depth?colormap=true", image_bytes(33, 47)).content))
    assert coloured.size == (33, 47) and coloured.mode == "RGB"


def test_health_and_metrics_name_the_served_model(server: str) -> None:
    assert _post(server, "/dehaze", image_bytes(40, 30)).status_code == 200  # an API on Redis learns it from this
    health = httpx.get(f"{server}/healthz").json()
    assert health["status"] == "ok" and health["model"]["name"] == "corun_tiny"
    assert health["model"]["licence"] == "GPL-3.0"
    assert re.search(r'^dehaze_model_info\{[^}]*variant="corun_tiny"', httpx.get(f"{server}/metrics").text, re.M)


def test_api_docs_say_how_corun_depth_is_made(server: str) -> None:
    schema = httpx.get(f"{server}/openapi.json").json()
    depth_route = schema["paths"]["/depth"]["post"]["description"]
    depth_field = schema["components"]["schemas"]["DehazeResponse"]["properties"]["depth"]["description"]
    for text in (depth_route, depth_field):
        assert "CORUN" in text and "transmission" in text and "-ln(t)" in text


def test_run_command_with_corun_weights(
    tmp_path: Path, corun_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("DEHAZE_")]:
        monkeypatch.delenv(name)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(40, 30))
    (folder / "b.jpg").write_bytes(image_bytes(150, 70, fmt="JPEG"))
    monkeypatch.setenv("DEHAZE_TILE_SIZE", "64")
    monkeypatch.setenv("DEHAZE_TILE_OVERLAP", "16")
    out = tmp_path / "out"
    assert main(["run", str(folder), "--out", str(out), "--depth", "--weights", str(corun_model[0])]) == 0
    for stem, size in {"a": (40, 30), "b": (150, 70)}.items():
        assert Image.open(out / f"{stem}.png").size == size
        depth = Image.open(out / f"{stem}_depth.png")
        assert depth.size == size and depth.mode.startswith("I;16")
