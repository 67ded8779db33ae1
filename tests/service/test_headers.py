"""The bounded header read (``service.headers``): budgets, declared sizes, data sufficiency, malformed fields.

The budgets must refuse what Pillow would parse for seconds, and never a real image: every format and colour mode
the service accepts, saved flat (the most compressible content there is) at 2000×1500, must pass.
"""

from __future__ import annotations

import io
import time
import zlib

import pytest
from PIL import Image, PngImagePlugin

from service import codec
from service.errors import MalformedImageError
from service.headers import MAX_HEADER_UNITS, MAX_SEGMENTS, read_header
from tests.reliability.corpus import bmp_with_size, header_heavy, lying_jpeg, png_with_long_transparency, thin_png

SAVERS: list[tuple[str, dict[str, object]]] = [
    ("PNG", {"compress_level": 9}),
    ("GIF", {}),
    ("BMP", {}),
    ("TIFF", {}),
    ("TIFF", {"compression": "tiff_deflate"}),
    ("TIFF", {"compression": "tiff_lzw"}),
    ("TIFF", {"compression": "packbits"}),
    ("JPEG", {"quality": 1}),
    ("JPEG", {"quality": 1, "progressive": True}),
    ("WEBP", {"quality": 1}),
    ("WEBP", {"lossless": True}),
]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA"])
@pytest.mark.parametrize(("fmt", "options"), SAVERS, ids=[f"{f}-{'-'.join(map(str, o.values()))}" for f, o in SAVERS])
def test_flat_images_of_every_format_pass_the_data_check(mode: str, fmt: str, options: dict[str, object]) -> None:
    try:
        data = encode(Image.new(mode, (2000, 1500)), fmt, **options)
    except (OSError, ValueError, KeyError):
        pytest.skip(f"Pillow cannot save {mode} as {fmt} {options}")
    declared = read_header(data)
    assert declared is not None and (declared.width, declared.height) == (2000, 1500)
    declared.check_data()
    assert codec.probe_image(data, 10**8) == (2000, 1500)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PNG-AFTER", "GIF", "WEBP"])
def test_structural_units_are_budgeted(fmt: str) -> None:
    """Just under the budget opens; just over it is refused (422) at once, however many units follow."""
    per_item = 2 if fmt == "GIF" else 1  # a comment extension is two blocks: its data and its terminator
    limit = MAX_SEGMENTS if fmt == "WEBP" else MAX_HEADER_UNITS  # libwebp walks chunks in C: only our loop counts
    codec.probe_image(header_heavy(fmt, limit // per_item - 40), 10**6)
    for count in (limit // per_item + 40, 300_000):
        started = time.perf_counter()
        with pytest.raises(MalformedImageError, match="refused to bound the work"):
            codec.probe_image(header_heavy(fmt, count), 10**6)
        assert time.perf_counter() - started < 0.5


def test_png_image_data_chunks_are_budgeted_too() -> None:
    """Empty IDAT chunks are walked one by one by the decoder: their number is bounded as well."""
    png = encode(Image.new("RGB", (8, 8)), "PNG")
    empty_idat = b"\x00\x00\x00\x00IDAT\x35\xaf\x06\x1e"
    with pytest.raises(MalformedImageError, match="PNG chunks"):
        codec.probe_image(png[:33] + empty_idat * (MAX_SEGMENTS + 1) + png[33:], 10**6)


def test_an_animated_png_of_many_frames_is_not_mistaken_for_metadata() -> None:
    frames = [Image.new("RGB", (4, 4), (i % 256, 0, 0)) for i in range(1500)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    assert codec.probe_image(buffer.getvalue(), 10**6) == (4, 4)


def test_the_probe_never_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's PNG getexif() decodes the whole image; the probe must read the orientation without it."""
    data = encode(Image.new("RGB", (300, 200)), "PNG")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: pytest.fail("the probe decoded"))
    assert codec.probe_image(data, 10**6) == (300, 200)


def test_a_header_claiming_more_pixels_than_its_data_is_malformed() -> None:
    data = lying_jpeg(4096, 4096)
    with pytest.raises(MalformedImageError, match="4096x4096"):
        codec.probe_image(data, 10**8)
    png = encode(Image.new("RGB", (16, 16)), "PNG")
    header = png[:16] + (4096).to_bytes(4, "big") + (4096).to_bytes(4, "big") + png[24:29]
    lying_png = header + zlib.crc32(header[12:29]).to_bytes(4, "big") + png[33:]
    with pytest.raises(MalformedImageError, match="image data"):
        codec.decode_image(lying_png, 10**8)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("palette-transparency-too-long", png_with_long_transparency()),
        ("bmp-negative-width", bmp_with_size(-4, 4)),
        ("bmp-zero-height", bmp_with_size(4, 0)),
        ("bmp-height-int-min", bmp_with_size(4, -(2**31))),
    ],
)
def test_malformed_fields_are_malformed_not_unsupported_or_too_large(name: str, data: bytes) -> None:
    with pytest.raises(MalformedImageError):
        codec.probe_image(data, 10**6)
    with pytest.raises(MalformedImageError):
        codec.decode_image(data, 10**6)


def test_a_top_down_bmp_is_still_accepted() -> None:
    bmp = bytearray(encode(Image.new("RGB", (4, 4), (10, 20, 30)), "BMP"))
    bmp[22:26] = (-4).to_bytes(4, "little", signed=True)
    assert codec.decode_image(bytes(bmp), 100).shape == (4, 4, 3)


def test_thin_images_decode_at_their_size() -> None:
    assert codec.probe_image(thin_png(3, 5000), 10**6) == (3, 5000)
