"""OpenAPI fragments for endpoints that read their multipart body themselves (so auth runs before parsing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.api.schemas import ErrorResponse

__all__ = ["ERROR_CAUSES", "ERROR_RESPONSES", "IMAGE_RESPONSES", "UPLOAD_BODY", "ErrorCause"]

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


@dataclass(frozen=True)
class ErrorCause:
    """One reason the API answers an error status: the OpenAPI description and the Errors table of docs/api.md name it.

    ``term`` is the setting or phrase that names the cause; it appears in ``text`` and must appear in docs/api.md's
    row for ``status`` (``tests/test_readme.py``), so a cause added here and not documented fails the tests.
    """

    status: int
    text: str
    term: str


ERROR_CAUSES: tuple[ErrorCause, ...] = (
    ErrorCause(401, "missing or wrong API key (DEHAZE_API_KEYS)", "DEHAZE_API_KEYS"),
    ErrorCause(413, "upload larger than DEHAZE_MAX_UPLOAD_BYTES", "DEHAZE_MAX_UPLOAD_BYTES"),
    ErrorCause(413, "more pixels than DEHAZE_MAX_PIXELS", "DEHAZE_MAX_PIXELS"),
    ErrorCause(413, "more model work than DEHAZE_MAX_COMPUTE_PIXELS", "DEHAZE_MAX_COMPUTE_PIXELS"),
    ErrorCause(415, "not an image, or an unsupported format or colour mode", "unsupported"),
    ErrorCause(422, "a malformed request: not multipart, no image, an invalid parameter", "not multipart"),
    ErrorCause(422, "a broken image header or pixel data, or NaN/inf in a float image", "broken"),
    ErrorCause(422, "an image header beyond the parsing budget", "parsing budget"),
    ErrorCause(422, "a header declaring more pixels than its data can hold", "more pixels than its data can hold"),
    ErrorCause(
        503, "queue full (DEHAZE_MAX_QUEUE_LENGTH, or Redis at maxmemory; Retry-After)", "DEHAZE_MAX_QUEUE_LENGTH"
    ),
    ErrorCause(503, "queue unreachable (Retry-After)", "unreachable"),
    ErrorCause(503, "a result that could not be stored (Redis at maxmemory; Retry-After)", "could not be stored"),
    ErrorCause(504, "no result within DEHAZE_REQUEST_TIMEOUT_S", "DEHAZE_REQUEST_TIMEOUT_S"),
    ErrorCause(504, "no haze density (FADE) score in time", "haze density"),
    ErrorCause(
        500, "internal error, or a job that failed more than DEHAZE_DELIVERY_LIMIT times", "DEHAZE_DELIVERY_LIMIT"
    ),
)
"""Every cause of every error status the upload endpoints answer (one table for OpenAPI and docs/api.md)."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorResponse,
        "description": "; ".join(cause.text for cause in ERROR_CAUSES if cause.status == status),
    }
    for status in sorted({cause.status for cause in ERROR_CAUSES})
}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media in ("image/png", "image/jpeg", "image/webp")}, "description": "the image"},
    **ERROR_RESPONSES,
}
