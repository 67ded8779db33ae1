"""OpenAPI fragments for endpoints that read their multipart body themselves (so auth runs before parsing)."""

from __future__ import annotations

from typing import Any

from service.api.schemas import ErrorResponse

__all__ = ["ERROR_RESPONSES", "IMAGE_RESPONSES", "UPLOAD_BODY"]

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary", "description": "the image file"}},
                }
            }
        },
    }
}

_ERRORS = {
    401: "missing or wrong API key",
    413: "upload too large (bytes, pixels, or model work: DEHAZE_MAX_COMPUTE_PIXELS)",
    415: "not an image, or an unsupported format",
    422: "malformed image or request, a header beyond the parsing budget, or one its data cannot fill",
    503: "queue full or unavailable, or a result Redis could not store (Retry-After)",
    504: "no result in time",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERRORS.items()
}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media in ("image/png", "image/jpeg", "image/webp")}, "description": "the image"},
    **ERROR_RESPONSES,
}
