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

__all__ = [
    "BOUNDARY",
    "Case",
    "Part",
    "bmp_with_size",
    "build_corpus",
    "bulk_case",
    "header_heavy",
    "lying_jpeg",
    "multipart",
    "png_with_long_transparency",
    "thin_png",
]

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


# -- images that cost more than their bytes (issue 13) -----------------------------------------------------------
def header_heavy(fmt: str, count: int) -> bytes:
    """A small valid image carrying ``count`` empty structural units that Pillow would parse one by one.

    JPEG: empty APP15 markers before the frame (4 bytes each); PNG: unknown ancillary chunks before the data, or
    after it with ``fmt`` "PNG-AFTER" (12 bytes each); GIF: one-byte comment extensions (5 bytes each); WEBP:
    unknown RIFF chunks (8 bytes each).
    """
    if fmt == "JPEG":
        jpeg = _encode(_rgb(16, 16), "JPEG")
        return jpeg[:2] + b"\xff\xef\x00\x02" * count + jpeg[2:]
    if fmt in ("PNG", "PNG-AFTER"):
        png = image_bytes(16, 16)
        junk = _chunk(b"zzZz", b"") * count
        if fmt == "PNG":
            return png[:33] + junk + png[33:]
        return png[:-12] + junk + png[-12:]
    if fmt == "GIF":
        gif = _encode(_rgb(16, 16).convert("P"), "GIF")
        flags = gif[10]
        start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        return gif[:start] + b"\x21\xfe\x01c\x00" * count + gif[start:]
    if fmt == "WEBP":
        webp = _encode(_rgb(16, 16), "WEBP")
        body = webp[12:] + b"ZZZZ\x00\x00\x00\x00" * count
        return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
    raise ValueError(f"no header-heavy builder for {fmt}")


def lying_jpeg(width: int, height: int) -> bytes:
    """A JPEG of a few hundred bytes whose frame header claims ``width``×``height`` (libjpeg decodes it grey)."""
    jpeg = bytearray(_encode(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG", quality=50))
    frame = jpeg.index(b"\xff\xc0")
    jpeg[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    scan = jpeg.index(b"\xff\xda")
    (length,) = struct.unpack_from(">H", jpeg, scan + 2)
    return bytes(jpeg[: scan + 2 + length]) + b"\x00" * 64 + b"\xff\xd9"


def thin_png(width: int, height: int) -> bytes:
    """A textured PNG of an extreme aspect ratio that compresses well (a 4096-pixel noise pattern repeated)."""
    pattern = np.random.default_rng(3).integers(40, 220, size=(4096, 3), dtype=np.uint8)
    pixels = np.resize(pattern, (width * height, 3)).reshape(height, width, 3)
    return _encode(Image.fromarray(pixels), "PNG", compress_level=9)


def png_with_long_transparency() -> bytes:
    """A 16-colour palette PNG whose transparency chunk lists 300 entries (at most one per palette entry)."""
    png = _encode(_rgb(20, 10).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    data = png.index(b"IDAT") - 4
    return png[:data] + _chunk(b"tRNS", bytes(300)) + png[data:]


def bmp_with_size(width: int, height: int) -> bytes:
    """A 4×4 BMP whose header claims ``width``×``height`` (signed 32-bit fields)."""
    bmp = bytearray(_encode(_rgb(4, 4), "BMP"))
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


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


def _costly_cases() -> list[Case]:
    """Uploads whose work is not bounded by their bytes: refused (or bounded) before any long work starts.

    Header-heavy files just under the 1 MB limit took seconds of Pillow's parsing on the event loop; a lying JPEG
    became 81 tiles of model work; a one-pixel-wide image is scored by FADE at 16 times its pixels and computed
    by the model at 32 times (its short side padded in each of thousands of tiles).
    """
    thin_density = {"density_status": 200}
    return [
        _upload("jpeg-240k-empty-markers", header_heavy("JPEG", 240_000), 422),
        _upload("png-80k-chunks-before-data", header_heavy("PNG", 80_000), 422),
        _upload("png-80k-chunks-after-data", header_heavy("PNG-AFTER", 80_000), 422),
        _upload("gif-190k-comment-blocks", header_heavy("GIF", 190_000), 422),
        _upload("webp-100k-unknown-chunks", header_heavy("WEBP", 100_000), 422),
        _upload("jpeg-700-bytes-claims-1000x1000", lying_jpeg(1000, 1000), 422),
        _upload("png-1x1000000", thin_png(1, 1_000_000), 413, (1, 1_000_000), **thin_density),
        _upload("png-1000000x1", thin_png(1_000_000, 1), 413, (1_000_000, 1), fade_undefined=True, **thin_density),
        _upload("png-transparency-longer-than-palette", png_with_long_transparency(), 422),
        _upload("bmp-negative-width", bmp_with_size(-4, 4), 422),
        _upload("bmp-height-int-min", bmp_with_size(4, -(2**31)), 422),
    ]


BUILDERS: tuple[Callable[[], list[Case]], ...] = (_framing_cases, _refused_file_cases, _odd_image_cases, _costly_cases)


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
