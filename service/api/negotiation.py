"""Which representation a client asked for: image format (query or Accept) and JSON or raw bytes."""

from __future__ import annotations

from typing import Literal

from service.api.errors import ApiError
from service.codec import MEDIA_TYPES

__all__ = ["FORMATS", "choose_format", "wants_json"]

ImageFormat = Literal["png", "jpeg", "webp"]
FORMATS: dict[str, ImageFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_BY_MEDIA_TYPE: dict[str, ImageFormat] = {media: FORMATS[fmt] for fmt, media in MEDIA_TYPES.items()}


def _accepted(accept: str) -> list[str]:
    """Media types of an Accept header, highest quality first (q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranked.append((-quality, index, media.lower()))
    return [media for _, _, media in sorted(ranked)]


def choose_format(query_format: str | None, accept: str) -> ImageFormat:
    """The output format: the ``format`` query parameter wins, then the Accept header, then PNG.

    Raises:
        ApiError: 422 for an unknown ``format`` value.
    """
    if query_format:
        chosen = FORMATS.get(query_format.lower())
        if chosen is None:
            raise ApiError(422, f"format must be one of png, jpeg, webp (got {query_format!r})")
        return chosen
    for media in _accepted(accept):
        if media in _BY_MEDIA_TYPE:
            return _BY_MEDIA_TYPE[media]
    return "png"


def wants_json(query_response: str | None, accept: str) -> bool:
    """True for ``?response=json``, or when the Accept header prefers application/json to every image type.

    Raises:
        ApiError: 422 for a ``response`` value other than json or image.
    """
    if query_response:
        if query_response.lower() not in ("json", "image"):
            raise ApiError(422, f"response must be json or image (got {query_response!r})")
        return query_response.lower() == "json"
    for media in _accepted(accept):
        if media == "application/json":
            return True
        if media in _BY_MEDIA_TYPE or media in ("image/*", "*/*"):
            return False
    return False
