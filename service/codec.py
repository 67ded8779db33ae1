"""The codec of the service: uploads in (probe, decode with limits), outputs out (8-bit rounding, encode, colour map).

Images are numpy arrays H×W×3 float32 in [0, 1] (depth maps H×W). Tiling lives with the worker's plan
(``service.worker.tiling``) and the tensor bridge with the runner (``service.worker.runner``); the errors raised here
carry their HTTP status (``service.errors``).

Decisions:
    * Only PNG, JPEG (camera MPO files open as JPEG), WebP, TIFF, BMP and GIF are opened (Pillow is told to try
      no other plugin).
    * Before Pillow parses anything, ``service.headers`` reads the container within a fixed budget of markers,
      chunks and segments (422 past it) and checks that the data can hold the declared pixels (422 when it cannot).
    * Our pixel limit is checked from the header, before any pixel is decoded. Pillow's own decompression-bomb
      guard stays on; its warning is turned into ``TooLargeError`` as well.
    * The probe reads the EXIF orientation without decoding: Pillow's PNG plugin would decode the whole image to
      look for an EXIF chunk after the pixel data, so such a late chunk is seen by the decode only.
    * EXIF orientation is applied, so outputs have the size the user sees.
    * Transparency is composited on white: the colour stored under fully transparent pixels is arbitrary (often
      black or garbage), so dropping alpha would feed the model an image nobody saw; white is what viewers and
      documents show behind a transparent image. The outputs are RGB without alpha.
    * 16-bit grey (``I;16*``) and 32-bit integer (``I``) images are divided by 65535 and clipped; float (``F``)
      images are taken as [0, 1] values and clipped (non-finite values are rejected). Multi-frame files (TIFF,
      GIF, WebP) give their first frame.
    * Floats become 8 (or 16) bits by one rule, ``to_uint8``: ``floor(x * 255 + 0.5)`` in float32, halves rounded
      up. The encoder, the FADE of 16-bit and float uploads and ``dehaze run``'s FADE all use it, so the score of a
      float image does not depend on the path it took (``np.rint`` would round halves to even).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import MalformedImageError, TooLargeError, UnsupportedImageError
from service.headers import read_header

__all__ = [
    "ACCEPTED_FORMATS",
    "MEDIA_TYPES",
    "apply_colormap",
    "decode_image",
    "encode_depth",
    "encode_image",
    "media_type",
    "probe_image",
    "to_rgb01",
    "to_uint8",
]

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")  # JPEG includes camera MPO
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
"""The output formats and their media types (the API's negotiation reads them from here)."""

_SIGNATURES: tuple[bytes, ...] = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ORIENTATION_TAG = 0x0112

_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
"""Modes Pillow always converts to RGB: a conversion failure there means broken data (422), not a wrong mode."""


# -- decoding ----------------------------------------------------------------------------------------------------
def _looks_like_accepted(data: bytes) -> bool:
    """True when the bytes start like one of our formats (so a decode failure means 'broken', not 'wrong type')."""
    if data.startswith(_SIGNATURES):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data[:2] == b"BM"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header within the parsing budget, enforce the pixel limit and open it; nothing is decoded yet."""
    declared = read_header(data)
    if declared is not None:
        if declared.pixels > max_pixels:
            raise TooLargeError(
                f"image has {declared.width}x{declared.height} = {declared.pixels} pixels; the limit is {max_pixels}"
            )
        declared.check_data()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLargeError(f"image too large: {error}") from error
    except UnidentifiedImageError as error:
        if _looks_like_accepted(data):
            raise MalformedImageError("the image header cannot be read") from error
        raise UnsupportedImageError(f"unsupported image format; accepted: {', '.join(ACCEPTED_FORMATS)}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise MalformedImageError(f"the image header cannot be read: {error}") from error
    width, height = image.size
    if width < 1 or height < 1:
        raise MalformedImageError(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise TooLargeError(f"image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return image


def probe_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height as displayed (after EXIF orientation), from the header alone.

    Raises:
        TooLargeError: more than ``max_pixels`` pixels.
        UnsupportedImageError: not an accepted format.
        MalformedImageError: the header is broken.
    """
    image = _open(data, max_pixels)
    width, height = image.size
    try:  # the base class's getexif: PNG's own would decode the whole image to look for a late EXIF chunk
        orientation = Image.Image.getexif(image).get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not reject an image Pillow can decode
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an upload to RGB float32 H×W×3 in [0, 1], EXIF orientation applied (first frame only).

    Raises:
        TooLargeError: more than ``max_pixels`` pixels (checked before decoding).
        UnsupportedImageError: not an accepted format or colour mode.
        MalformedImageError: the bytes cannot be decoded.
    """
    image = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image) or image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLargeError(f"image too large: {error}") from error
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise MalformedImageError(f"the image cannot be decoded: {error}") from error
    return to_rgb01(image)


def to_rgb01(image: Image.Image) -> np.ndarray:
    """Any decoded colour mode -> RGB float32 H×W×3 in [0, 1] (alpha composited on white).

    Raises:
        MalformedImageError: a float image with NaN or infinite values.
        UnsupportedImageError: a colour mode that cannot be converted to RGB.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        grey = np.asarray(image).astype(np.float32)
        if mode == "F":
            if not np.isfinite(grey).all():
                raise MalformedImageError("float image holds NaN or infinite values")
        else:
            grey /= 65535.0
        grey = np.clip(grey, 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2)
    try:
        if image.has_transparency_data:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            alpha = rgba[:, :, 3:4]
            return np.ascontiguousarray(rgba[:, :, :3] * alpha + (1.0 - alpha))
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except ValueError as error:
        if mode in _CONVERTIBLE_MODES:  # e.g. a palette index beyond the palette: the data is broken
            raise MalformedImageError(f"the {mode} image cannot be converted to RGB: {error}") from error
        raise UnsupportedImageError(f"unsupported colour mode {mode}") from error  # e.g. LAB without a profile


# -- float to integer --------------------------------------------------------------------------------------------
def _round_half_up(values01: np.ndarray, top: int) -> np.ndarray:
    """``values01 * top`` rounded half up and clipped to [0, top], in float32 (the caller picks the integer type)."""
    return np.clip(np.asarray(values01, dtype=np.float32) * float(top) + 0.5, 0, top)


def to_uint8(values01: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8, halves rounded up: the one float-to-8-bit rule of the project."""
    return _round_half_up(values01, 255).astype(np.uint8)


def to_uint16(values01: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint16 by the same rule (16-bit depth maps)."""
    return _round_half_up(values01, 65535).astype(np.uint16)


# -- encoding ----------------------------------------------------------------------------------------------------
def media_type(fmt: str) -> str:
    """The media type of an output format (png, jpeg, webp)."""
    try:
        return MEDIA_TYPES[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(MEDIA_TYPES)}") from None


def encode_image(rgb01: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode H×W×3 [0, 1] as 8-bit PNG, JPEG or WebP (``quality`` for the lossy two)."""
    fmt = fmt.lower()
    media_type(fmt)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    image = Image.fromarray(to_uint8(rgb01), mode="RGB")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=3)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


# A turbo-like colour map (dark blue -> cyan -> green -> yellow -> red), piecewise linear between these stops.
# service/web/static/app.js repeats it (tests/web/test_routes.py keeps the two equal).
_COLORMAP_STOPS = np.array([0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0], dtype=np.float32)
_COLORMAP_RGB = (
    np.array(
        [
            [48, 18, 59],
            [70, 107, 227],
            [40, 188, 235],
            [50, 241, 152],
            [164, 252, 60],
            [250, 186, 57],
            [228, 70, 10],
            [122, 4, 3],
        ],
        dtype=np.float32,
    )
    / 255.0
)


def apply_colormap(values01: np.ndarray) -> np.ndarray:
    """H×W values in [0, 1] -> H×W×3 RGB in [0, 1] through the turbo-like map (0 = near = dark blue)."""
    clipped = np.clip(np.asarray(values01, dtype=np.float32), 0.0, 1.0)
    channels = [np.interp(clipped, _COLORMAP_STOPS, _COLORMAP_RGB[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def encode_depth(depth01: np.ndarray, colormap: bool = False) -> bytes:
    """Encode an H×W depth map in [0, 1] as a 16-bit grey PNG, or an 8-bit RGB PNG when ``colormap``."""
    depth = np.asarray(depth01, dtype=np.float32)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise ValueError(f"expected an H×W depth map, got shape {depth.shape}")
    buffer = io.BytesIO()
    if colormap:
        Image.fromarray(to_uint8(apply_colormap(depth)), mode="RGB").save(buffer, format="PNG", compress_level=3)
    else:
        grey16 = to_uint16(depth)
        Image.fromarray(grey16).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
