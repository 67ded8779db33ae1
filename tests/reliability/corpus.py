"""A corpus of hostile and odd uploads, built in memory, each with the answer the API must give.

Every case is a complete HTTP request body with its headers (the multipart encoding is written here, so that
broken framing, wrong Content-Type headers and absurd part counts can be expressed). Valid but odd images must
come back 200 at their displayed size; everything else must be a 4xx with the JSON error shape.

The sizes assume the limits of ``tests.reliability.conftest.SERVED_LIMITS`` (1 MB, 1 megapixel).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tests.service.live_server import image_bytes

__all__ = ["BOUNDARY", "Case", "Part", "build_corpus", "bulk_case", "multipart"]

BOUNDARY = "reliability-corpus-boundary"


@dataclass(frozen=True)
class Part:
    """One multipart part: a file when ``filename`` is set, else a plain field."""

    name: str
    data: bytes
    filename: str | None = "upload.png"
    content_type: str | None = "image/png"


@dataclass(frozen=True)
class Case:
    """One request and its expected outcome.

    Attributes:
        name: the test id.
        body: the raw request body.
        headers: the request headers (Content-Type among them).
        status: the expected status.
        size: for a 200: the expected (width, height) of the dehazed image.
        density_status: the expected status of ``/density`` when it differs from ``status``.
        fade_undefined: for a 200 of ``/density``: the image has no texture, so its FADE is null.
    """

    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    size: tuple[int, int] | None = None
    density_status: int | None = None
    fade_undefined: bool = False


def multipart(parts: Sequence[Part], boundary: str = BOUNDARY) -> bytes:
    """The multipart/form-data encoding of ``parts`` with ``boundary``."""
    out = io.BytesIO()
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode())
        if part.content_type is not None:
            out.write(f"Content-Type: {part.content_type}\r\n".encode())
        out.write(b"\r\n" + part.data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _upload(name: str, data: bytes, status: int, size: tuple[int, int] | None = None, **extra: object) -> Case:
    """A case uploading ``data`` as the file of the ``image`` field, with a correct multipart body."""
    return Case(name, multipart([Part("image", data)]), dict(FORM), status, size, **extra)  # type: ignore[arg-type]


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(width, height, seed=seed))).convert("RGB")


# -- PNG surgery -------------------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack_from(">I", png, offset)
        chunks.append((png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _corrupt_zlib_png() -> bytes:
    """A PNG whose IDAT chunks have valid CRCs but a garbled deflate stream (zlib header kept)."""
    png = image_bytes(48, 32)
    out = png[:8]
    for kind, data in _png_chunks(png):
        if kind == b"IDAT":
            data = data[:2] + bytes(b ^ 0x5A for b in data[2:])
        out += _chunk(kind, data)
    return out


def _bad_crc_png() -> bytes:
    png = bytearray(image_bytes(24, 16))
    png[29] ^= 0xFF  # the last byte of the IHDR chunk's CRC
    return bytes(png)


def _header_bomb_png() -> bytes:
    """A PNG header claiming 100,000 × 100,000 pixels, followed by a few hundred bytes of data."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 20_000, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _header_bomb_gif() -> bytes:
    """A one-pixel GIF whose screen descriptor claims 65,535 × 65,535."""
    gif = bytearray(_encode(Image.new("P", (1, 1)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(gif)


# -- odd but valid images ----------------------------------------------------------------------------------------
def _sixteen_bit_png() -> bytes:
    ramp = np.linspace(0, 65535, 40 * 30, dtype=np.float64).reshape(30, 40).astype(np.uint16)
    return _encode(Image.fromarray(ramp), "PNG")


def _palette_png() -> bytes:
    image = _rgb(33, 21).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def _animated(fmt: str) -> bytes:
    frames = [_rgb(36, 24, seed=i) for i in range(3)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display: stored 40×24, shown 24×40
    return _encode(_rgb(40, 24), "JPEG", exif=exif.tobytes())


def _multipage_tiff() -> bytes:
    pages = [_rgb(30, 20, seed=i) for i in range(3)]
    return _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _float_tiff(values: np.ndarray) -> bytes:
    return _encode(Image.fromarray(values.astype(np.float32), mode="F"), "TIFF")


def _noise_png(width: int, height: int) -> bytes:
    """Random pixels: does not compress, so the file is about 3 bytes per pixel."""
    pixels = np.random.default_rng(7).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels), "PNG", compress_level=1)


# -- the corpus --------------------------------------------------------------------------------------------------
def _framing_cases() -> list[Case]:
    """Requests whose multipart framing or headers are wrong, whatever the file."""
    png = image_bytes(32, 24)
    many_fields = [Part(f"f{i}", b"x", None, None) for i in range(10_000)]
    return [
        Case("empty-body", b"", dict(FORM), 422),
        Case("no-body-no-content-type", b"", {}, 422),
        Case("missing-field", multipart([Part("note", b"hello", None, None)]), dict(FORM), 422),
        Case("wrong-field-name", multipart([Part("file", png)]), dict(FORM), 422),
        Case("image-as-text-field", multipart([Part("image", b"abc", None, None)]), dict(FORM), 422),
        Case("empty-file", multipart([Part("image", b"")]), dict(FORM), 422),
        Case("two-files", multipart([Part("image", png), Part("image", png)]), dict(FORM), 422),
        Case("ten-thousand-parts", multipart([*many_fields, Part("image", png)]), dict(FORM), 422),
        Case("content-type-json", multipart([Part("image", png)]), {"Content-Type": "application/json"}, 422),
        Case(
            "multipart-without-boundary", multipart([Part("image", png)]), {"Content-Type": "multipart/form-data"}, 422
        ),
        Case("boundary-mismatch", multipart([Part("image", png)], "other-boundary"), dict(FORM), 422),
        Case("urlencoded-form", b"image=abc", {"Content-Type": "application/x-www-form-urlencoded"}, 422),
        Case(
            "part-content-type-text",  # the bytes decide, not the part's header or file name
            multipart([Part("image", png, "notes.txt", "text/plain")]),
            dict(FORM),
            200,
            (32, 24),
        ),
    ]


def _refused_file_cases() -> list[Case]:
    """Files that are not images we accept, broken images, and images over a limit."""
    png, jpeg = image_bytes(64, 48), image_bytes(64, 48, fmt="JPEG")
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    return [
        _upload("text-named-png", b"just some text, not an image at all\n", 415),
        _upload("pdf-named-png", pdf, 415),
        _upload("svg-named-png", svg, 415),
        _upload("ico-not-accepted", _encode(Image.new("RGB", (16, 16)), "ICO"), 415),
        _upload("truncated-png", png[: len(png) // 2], 422),
        _upload("truncated-jpeg", jpeg[: len(jpeg) // 2], 422),
        _upload("corrupt-zlib-stream", _corrupt_zlib_png(), 422),
        _upload("bad-header-crc", _bad_crc_png(), 422),
        _upload("png-signature-only", png[:8], 422),
        _upload("webp-riff-garbage", b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x07" * 40, 422),
        _upload("float-tiff-with-nan", _float_tiff(np.full((8, 8), np.nan)), 422),
        _upload("bomb-zeros-5000x5000", _encode(Image.new("L", (5000, 5000)), "PNG"), 413),
        _upload("bomb-header-100000x100000", _header_bomb_png(), 413),
        _upload("bomb-gif-65535x65535", _header_bomb_gif(), 413),
        _upload("over-the-byte-limit", _noise_png(700, 600), 413),
    ]


def _odd_image_cases() -> list[Case]:
    """Valid images of unusual size, depth, colour mode or container: each must be dehazed."""
    rgb = _rgb(40, 30)
    progressive = _encode(rgb, "JPEG", progressive=True, quality=85)
    values = np.linspace(0.0, 1.0, 30 * 40, dtype=np.float32).reshape(30, 40)
    return [
        _upload("one-pixel", image_bytes(1, 1), 200, (1, 1), fade_undefined=True),
        _upload("two-by-4000", image_bytes(2, 4000), 200, (2, 4000)),
        _upload("png-16-bit-grey", _sixteen_bit_png(), 200, (40, 30)),
        _upload("grey", _encode(rgb.convert("L"), "PNG"), 200, (40, 30)),
        _upload("grey-alpha", _encode(rgb.convert("LA"), "PNG"), 200, (40, 30)),
        _upload("rgba", _encode(rgb.convert("RGBA"), "PNG"), 200, (40, 30)),
        _upload("palette-with-transparency", _palette_png(), 200, (33, 21)),
        _upload("bilevel", _encode(rgb.convert("1"), "PNG"), 200, (40, 30)),
        _upload("cmyk-jpeg", _encode(rgb.convert("CMYK"), "JPEG"), 200, (40, 30)),
        _upload("progressive-jpeg", progressive, 200, (40, 30)),
        _upload("animated-gif", _animated("GIF"), 200, (36, 24)),
        _upload("animated-webp", _animated("WEBP"), 200, (36, 24)),
        _upload("exif-rotated-jpeg", _exif_rotated_jpeg(), 200, (24, 40)),
        _upload("multipage-tiff", _multipage_tiff(), 200, (30, 20)),
        _upload("float-tiff", _float_tiff(values), 200, (40, 30)),
        _upload("bmp", _encode(rgb, "BMP"), 200, (40, 30)),
    ]


BUILDERS: tuple[Callable[[], list[Case]], ...] = (_framing_cases, _refused_file_cases, _odd_image_cases)


@functools.cache
def build_corpus() -> tuple[Case, ...]:
    """Every case, built once per process."""
    cases = tuple(case for builder in BUILDERS for case in builder())
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise ValueError("corpus case names must be unique")
    return cases


@functools.cache
def bulk_case() -> Case:
    """A large upload (about 0.95 MB, just under the byte limit) that goes the whole way and then fails.

    A PNG of random pixels cut short: its header passes the API's checks, so the bytes are queued, handed to the
    worker and decoded until the data runs out (422). Repeating it moves tens of megabytes through the service.
    """
    png = _noise_png(560, 600)
    return _upload("bulk-truncated-png", png[:950_000], 422)
