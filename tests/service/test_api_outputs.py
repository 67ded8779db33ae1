"""The HTTP API over real TCP (uvicorn) with both queue backends: outputs, formats, upload errors, batching.

One server per backend serves the whole module: embedded (in-process queue and worker) and Redis (the API
process submits to a private redis-server; a batching worker consumes in another thread).
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.service.live_server import image_bytes, live_server, model_settings, redis_worker, tiny_model, tiny_weights

__all__ = ["tiny_model", "tiny_weights"]  # session fixtures, re-exported for pytest

LIMIT_BYTES = 150_000
LIMIT_PIXELS = 200 * 200


@pytest.fixture(scope="module", params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def server(request: pytest.FixtureRequest, tiny_model: tuple[Path, Path]) -> Iterator[str]:
    """The API on a free port, ready, in one of the two topologies."""
    limits = {"max_upload_bytes": LIMIT_BYTES, "max_pixels": LIMIT_PIXELS, "max_batch_wait_ms": 50.0}
    if request.param == "embedded":
        with live_server(model_settings(tiny_model, **limits)) as url:
            yield url
        return
    redis_server = request.getfixturevalue("redis_server")
    redis_server.flush()
    settings = model_settings(tiny_model, redis_url=redis_server.url, **limits)
    with redis_worker(settings), live_server(settings) as url:
        yield url


def _post(url: str, path: str, data: bytes, **kwargs: object) -> httpx.Response:
    files = {"image": ("upload.png", data, "image/png")}
    return httpx.post(f"{url}{path}", files=files, timeout=60, **kwargs)  # type: ignore[arg-type]


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("query", "headers", "pil_format", "media_type"),
    [
        ("", {}, "PNG", "image/png"),
        ("?format=jpeg", {}, "JPEG", "image/jpeg"),
        ("", {"Accept": "image/webp"}, "WEBP", "image/webp"),
        ("?format=png", {"Accept": "image/jpeg"}, "PNG", "image/png"),  # the query parameter wins
    ],
)
def test_dehaze_returns_the_image_in_the_requested_format(
    server: str, query: str, headers: dict[str, str], pil_format: str, media_type: str
) -> None:
    response = _post(server, f"/dehaze{query}", image_bytes(45, 37), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == (pil_format, (45, 37))


@pytest.mark.parametrize(("query", "headers"), [("?response=json", {}), ("", {"Accept": "application/json"})])
def test_dehaze_json_has_all_three_outputs(server: str, query: str, headers: dict[str, str]) -> None:
    response = _post(server, f"/dehaze{query}", image_bytes(50, 34), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    dehazed = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    depth = Image.open(io.BytesIO(base64.b64decode(body["depth"])))
    assert (dehazed.format, dehazed.size, body["image_media_type"]) == ("PNG", (50, 34), "image/png")
    assert depth.size == (50, 34) and depth.mode.startswith("I;16")
    assert (body["width"], body["height"]) == (50, 34)
    assert isinstance(body["fade_in"], float) and body["fade_in"] > 0
    assert isinstance(body["fade_out"], float) and body["fade_out"] > 0
    assert body["model"]["name"] == "dcmpnet_tiny"
    assert body["model"]["licence"] == "MIT"  # the tiny checkpoint records no licence: the project's own
    assert body["timings"]["total"] > 0


def test_depth_is_16_bit_grey_or_colour_mapped(server: str) -> None:
    grey = _post(server, "/depth", image_bytes(33, 47))
    assert grey.status_code == 200 and grey.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(grey.content))
    assert image.size == (33, 47) and image.mode.startswith("I;16")
    coloured = Image.open(io.BytesIO(_post(server, "/depth?colormap=true", image_bytes(33, 47)).content))
    assert coloured.size == (33, 47) and coloured.mode == "RGB"


@pytest.mark.parametrize("path", ["/dehaze", "/depth"])
def test_an_image_answer_says_where_its_time_went(server: str, path: str) -> None:
    response = _post(server, path, image_bytes(45, 37))
    assert response.status_code == 200, response.text
    stages = {
        name.strip(): float(duration)
        for name, duration in (entry.split(";dur=") for entry in response.headers["server-timing"].split(","))
    }
    assert list(stages) == ["queue_wait", "decode", "compute", "encode", "total"]
    assert stages["compute"] > 0 and min(stages.values()) >= 0
    assert sum(stages[name] for name in ("queue_wait", "decode", "compute", "encode")) <= stages["total"]


def test_density_scores_the_upload_alone(server: str) -> None:
    response = _post(server, "/density", image_bytes(64, 48))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fade"] > 0 and (body["width"], body["height"]) == (64, 48)


def test_upload_over_the_byte_limit_is_413_by_content_length(server: str) -> None:
    message = _error(_post(server, "/dehaze", b"\0" * (LIMIT_BYTES * 3)), 413)
    assert f"limit of {LIMIT_BYTES} bytes" in message  # the configured limit, not the internal framing allowance


def test_upload_over_the_byte_limit_is_413_while_streaming(server: str) -> None:
    """No Content-Length (chunked): the server stops reading once the limit is crossed."""
    boundary = "limit-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(LIMIT_BYTES * 3 // 16384):
            yield b"\0" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = httpx.post(f"{server}/dehaze", content=chunks(), headers=headers, timeout=60)
    assert "content-length" not in response.request.headers
    assert f"limit of {LIMIT_BYTES} bytes" in _error(response, 413)


def test_file_just_over_the_limit_is_413(server: str) -> None:
    """Within the multipart allowance of the body but above max_upload_bytes for the file itself."""
    _error(_post(server, "/dehaze", b"\0" * (LIMIT_BYTES + 10)), 413)


def test_too_many_pixels_is_413_before_decoding(server: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300)).save(buffer, format="PNG")  # compresses to a few hundred bytes
    assert "pixels" in _error(_post(server, "/dehaze", buffer.getvalue()), 413).lower()


def test_not_an_image_is_415(server: str) -> None:
    _error(_post(server, "/dehaze", b"this is plain text, not an image"), 415)


def test_malformed_image_is_422(server: str) -> None:
    truncated = image_bytes(40, 40)[:80]  # a valid PNG signature and header, then nothing
    _error(_post(server, "/dehaze", truncated), 422)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"files": {"picture": ("a.png", b"\x89PNG", "image/png")}},  # wrong field name
        {"data": {"image": "not a file"}},  # a text field, not a file
        {"content": b"raw bytes", "headers": {"Content-Type": "image/png"}},  # not multipart at all
    ],
)
def test_missing_or_wrong_multipart_field_is_422(server: str, kwargs: dict[str, object]) -> None:
    _error(httpx.post(f"{server}/dehaze", timeout=30, **kwargs), 422)  # type: ignore[arg-type]


def test_unknown_format_is_422(server: str) -> None:
    _error(_post(server, "/dehaze?format=gif", image_bytes(20, 20)), 422)


def _batch_sizes(metrics_text: str) -> tuple[float, float]:
    """(batches, batches of size one) from the dehaze_batch_size histogram."""
    count = re.search(r"^dehaze_batch_size_count (\S+)$", metrics_text, re.M)
    ones = re.search(r'^dehaze_batch_size_bucket\{le="1\.0"\} (\S+)$', metrics_text, re.M)
    assert count and ones, "dehaze_batch_size is missing from /metrics"
    return float(count[1]), float(ones[1])


def test_sixteen_concurrent_uploads_of_mixed_sizes_are_batched(server: str) -> None:
    sizes = [(40, 30), (64, 64), (37, 53), (96, 72)] * 4
    before = _batch_sizes(httpx.get(f"{server}/metrics").text)

    async def upload_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, timeout=120) as client:
            uploads = [
                client.post("/dehaze", files={"image": ("i.png", image_bytes(w, h, seed=i), "image/png")})
                for i, (w, h) in enumerate(sizes)
            ]
            return await asyncio.gather(*uploads)

    responses = asyncio.run(upload_all())
    for (width, height), response in zip(sizes, responses, strict=True):
        assert response.status_code == 200, response.text
        assert Image.open(io.BytesIO(response.content)).size == (width, height)
    after = _batch_sizes(httpx.get(f"{server}/metrics").text)
    batches, single = after[0] - before[0], after[1] - before[1]
    assert batches - single > 0, f"no batch larger than one among {batches:g} batches"


def test_health_readiness_and_metrics(server: str) -> None:
    health = httpx.get(f"{server}/healthz").json()
    assert health["status"] == "ok" and health["model"]["name"] == "dcmpnet_tiny"  # the model of the answers so far
    assert health["model"]["licence"] == "MIT"
    ready = httpx.get(f"{server}/readyz").json()
    assert ready["ready"] is True and ready["workers_alive"] >= 1
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert re.search(r'dehaze_requests_total\{method="POST",route="/dehaze",status="200"\} [1-9]', metrics.text)
    assert 'dehaze_requests_total{method="POST",route="/dehaze",status="413"}' in metrics.text
    assert "dehaze_model_info{" in metrics.text
