"""Client-side helpers of the reliability tests: uploads and checks of the answers."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from tests.service.live_server import image_bytes

__all__ = ["dehaze", "expect_error", "expect_image", "refuses_connections"]


def dehaze(
    url: str, size: tuple[int, int] | None = None, data: bytes | None = None, timeout: float | httpx.Timeout = 180
) -> httpx.Response:
    """POST an upload to ``/dehaze``: ``data``, or a textured PNG of ``size`` (seeded by the size, so each differs)."""
    if data is None:
        if size is None:
            raise ValueError("give a size or the data")
        data = image_bytes(*size, seed=size[0] * 7919 + size[1])
    return httpx.post(f"{url}/dehaze", files={"image": ("upload.png", data, "image/png")}, timeout=timeout)


def expect_image(response: httpx.Response, size: tuple[int, int]) -> None:
    """A 200 whose PNG has ``size``: the answer belongs to the request that sent an image of that size."""
    assert response.status_code == 200, response.text[:300]
    assert Image.open(io.BytesIO(response.content)).size == size


def expect_error(response: httpx.Response, status: int) -> str:
    """The JSON error shape with ``status``; returns the message."""
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["status"] == status
    return str(error["message"])


def refuses_connections(url: str) -> bool:
    """True when nothing accepts TCP connections at ``url`` any more."""
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False
