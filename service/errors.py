"""The errors an upload can cause, each carrying the HTTP status the API answers with (one table, here).

``service.imaging`` re-exports them; the API's routes and the worker read ``error.status`` instead of keeping their
own error -> status tables.
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
