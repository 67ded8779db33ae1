"""The errors an upload can cause, each carrying the HTTP status the API answers with (one table, here).

``service.codec`` and ``service.headers`` raise them while reading an upload, ``service.worker.tiling`` while pricing
its model work; the API (``service.api.jobs``) and the worker (``service.worker.loop``) read ``error.status`` instead
of keeping their own error -> status tables. They live apart from the codec because ``service.headers``, which the
codec calls, raises them too.
"""

from __future__ import annotations

__all__ = ["ImageError", "MalformedImageError", "TooLargeError", "UnsupportedImageError", "status_of"]


class ImageError(ValueError):
    """Base class of the errors an upload can cause."""

    status: int = 422


class UnsupportedImageError(ImageError):
    """Not an image format (or colour mode) we accept: HTTP 415."""

    status = 415


class MalformedImageError(ImageError):
    """A format we accept, but the bytes are broken or exceed a parsing budget: HTTP 422."""

    status = 422


class TooLargeError(ImageError):
    """More pixels than allowed, or more model work than one request may cost: HTTP 413."""

    status = 413


def status_of(error: BaseException, default: int = 500) -> int:
    """The HTTP status of an upload error, ``default`` for anything else."""
    return error.status if isinstance(error, ImageError) else default
