"""Pure image functions of the service: decode with limits, colour modes, tiling and stitching, encode.

Images are numpy arrays H×W×3 float32 in [0, 1] (depth maps H×W); the model side (N×3×H×W tensors) is reached
only through ``to_tensor``/``from_tensor``, which import torch on use so that the API process never loads it.

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
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageError, MalformedImageError, TooLargeError, UnsupportedImageError
from service.headers import read_header

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACCEPTED_FORMATS",
    "ImageError",
    "MalformedImageError",
    "Stitcher",
    "Tile",
    "TooLargeError",
    "UnsupportedImageError",
    "apply_colormap",
    "blend_weights",
    "bucket_shape",
    "check_compute",
    "compute_pixels",
    "decode_image",
    "encode_depth",
    "encode_image",
    "from_tensor",
    "media_type",
    "pad_to",
    "plan_tiles",
    "probe_image",
    "tile_starts",
    "to_rgb01",
    "to_tensor",
]

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")  # JPEG includes camera MPO
_SIGNATURES: tuple[bytes, ...] = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
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


# -- tensors -----------------------------------------------------------------------------------------------------
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """H×W×C or N×H×W×C float array -> N×C×H×W float32 tensor (a copy, contiguous)."""
    import torch

    array = images[None] if images.ndim == 3 else images
    if array.ndim != 4:
        raise ValueError(f"expected H×W×C or N×H×W×C, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2), dtype=np.float32))


def from_tensor(tensor: torch.Tensor) -> np.ndarray:
    """N×C×H×W tensor (any device or dtype) -> N×H×W×C float32 array."""
    if tensor.ndim != 4:
        raise ValueError(f"expected N×C×H×W, got shape {tuple(tensor.shape)}")
    return tensor.detach().float().cpu().numpy().transpose(0, 2, 3, 1)


# -- padding and tiling ------------------------------------------------------------------------------------------
def bucket_shape(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The shape an item is padded to so that it shares a batch with its peers: each side up to ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad H×W×C (bottom and right) to ``height``×``width`` by mirroring; crop back with ``[:h, :w]``.

    Mirroring (not zeros) keeps the padded border looking like the image, so the network's output near the real
    border is not pulled towards a black frame.
    """
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad {image.shape[:2]} to the smaller {(height, width)}")
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")


@dataclass(frozen=True)
class Tile:
    """A region of an image: rows ``y:y+h``, columns ``x:x+w``."""

    y: int
    x: int
    h: int
    w: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap`` shared pixels.

    The stride is ``tile - overlap``; the last tile is moved back to end flush with the image (so its overlap with
    its neighbour may be larger). A length up to ``tile`` gives the single start 0.
    """
    if tile < 1 or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= 2*overlap < tile, got tile={tile} overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """The tiles covering an image; all have the same shape (``tile_size`` or the image's side when smaller)."""
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    return [
        Tile(y, x, tile_h, tile_w)
        for y in tile_starts(height, tile_size, overlap)
        for x in tile_starts(width, tile_size, overlap)
    ]


def compute_pixels(height: int, width: int, tile_size: int, overlap: int, multiple: int) -> int:
    """Pixels the model computes for an image: its tiles, each padded to its bucket (see ``plan_tiles``).

    About 1.1-1.3 × height × width for large photos; far more for very thin images, whose short side is padded up
    to ``multiple`` in every one of their many tiles (a 1×1,000,000 image computes 32 × 1,000,000 pixels).
    """
    tiles = len(tile_starts(height, tile_size, overlap)) * len(tile_starts(width, tile_size, overlap))
    padded_h, padded_w = bucket_shape(min(tile_size, height), min(tile_size, width), multiple)
    return tiles * padded_h * padded_w


def check_compute(height: int, width: int, tile_size: int, overlap: int, multiple: int, budget: int) -> int:
    """The pixels the model computes for an image (``compute_pixels``), refused above ``budget``.

    Raises:
        TooLargeError: the image needs more model work than ``budget`` pixels (HTTP 413).
    """
    needed = compute_pixels(height, width, tile_size, overlap, multiple)
    if needed > budget:
        raise TooLargeError(
            f"a {width}x{height} image needs {needed} pixels of model work (tiles padded to {multiple}); "
            f"the limit per request is {budget}"
        )
    return needed


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Linear blending weights of one tile, H×W float32 in (0, 1].

    Weights ramp up linearly over ``overlap`` pixels from each side and are 1 inside; they never reach 0, so the
    normalised sum in ``Stitcher`` is exact at image borders (covered by one tile) too.
    """

    def ramp(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float32)
        return np.minimum(1.0, (distance + 1.0) / (overlap + 1.0)).astype(np.float32)

    return np.outer(ramp(height), ramp(width))


class Stitcher:
    """Accumulates blended tile outputs of one image into a full-size result (one instance per image)."""

    def __init__(self, height: int, width: int, channels: int, overlap: int) -> None:
        self._sum = np.zeros((height, width, channels), dtype=np.float32)
        self._weight = np.zeros((height, width, 1), dtype=np.float32)
        self._overlap = overlap

    def add(self, tile: Tile, output: np.ndarray) -> None:
        """Blend one tile's output (h×w×C, already cropped to the tile) into the result."""
        if output.shape[:2] != (tile.h, tile.w):
            raise ValueError(f"tile output {output.shape[:2]} does not match the tile {(tile.h, tile.w)}")
        weights = blend_weights(tile.h, tile.w, self._overlap)[:, :, None]
        self._sum[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] += output * weights
        self._weight[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] += weights

    def result(self) -> np.ndarray:
        """The stitched H×W×C image; raises ValueError if some pixel was covered by no tile."""
        if not (self._weight > 0).all():
            raise ValueError("some pixels were covered by no tile")
        return self._sum / self._weight


# -- encoding ----------------------------------------------------------------------------------------------------
def media_type(fmt: str) -> str:
    """The media type of an output format (png, jpeg, webp)."""
    try:
        return _MEDIA_TYPES[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(_MEDIA_TYPES)}") from None


def _to_uint8(values01: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(values01, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def encode_image(rgb01: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode H×W×3 [0, 1] as 8-bit PNG, JPEG or WebP (``quality`` for the lossy two)."""
    fmt = fmt.lower()
    media_type(fmt)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    image = Image.fromarray(_to_uint8(rgb01), mode="RGB")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=3)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


# A turbo-like colour map (dark blue -> cyan -> green -> yellow -> red), piecewise linear between these stops.
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
        Image.fromarray(_to_uint8(apply_colormap(depth)), mode="RGB").save(buffer, format="PNG", compress_level=3)
    else:
        grey16 = np.clip(depth * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
        Image.fromarray(grey16).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
