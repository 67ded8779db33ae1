"""Decoding limits and colour modes, EXIF orientation, encoding, and the one float-to-8-bit rule."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from commands import cli
from service import codec
from service.config import Settings
from service.density import fade_of_bytes
from service.errors import MalformedImageError, TooLargeError, UnsupportedImageError


def save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(width: int = 6, height: int = 4) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs / max(1, width - 1), ys / max(1, height - 1), np.full(xs.shape, 0.5)], -1).astype(np.float32)


# -- decoding ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG"),
        ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGBA", "WEBP"), ("RGB", "BMP"),
        ("P", "GIF"), ("CMYK", "TIFF"), ("F", "TIFF"), ("I", "TIFF"), ("I;16B", "TIFF"), ("PA", "TIFF"),
        ("YCbCr", "TIFF"),
    ],
)  # fmt: skip
def test_every_colour_mode_decodes_to_rgb01(mode: str, fmt: str) -> None:
    source = Image.fromarray((gradient(9, 7) * 255).astype(np.uint8)).convert(mode)
    rgb = codec.decode_image(save(source, fmt), max_pixels=1000)
    assert rgb.shape == (7, 9, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0


def test_sixteen_bit_grey_uses_the_full_range() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    rgb = codec.decode_image(save(Image.fromarray(values), "PNG"), 100)
    np.testing.assert_allclose(rgb[0, :, 0], [0.0, 32768 / 65535, 1.0], atol=1e-6)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_float_tiff_values_are_kept_and_clipped() -> None:
    values = np.array([[0.25, 0.75, 1.5]], dtype=np.float32)
    rgb = codec.decode_image(save(Image.fromarray(values, mode="F"), "TIFF"), 100)
    np.testing.assert_allclose(rgb[0, :, 1], [0.25, 0.75, 1.0], atol=1e-6)


def test_float_tiff_with_nan_is_malformed() -> None:
    values = np.array([[0.25, np.nan]], dtype=np.float32)
    with pytest.raises(MalformedImageError):
        codec.decode_image(save(Image.fromarray(values, mode="F"), "TIFF"), 100)


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 128]]], dtype=np.uint8)
    rgb = codec.decode_image(save(Image.fromarray(rgba, mode="RGBA"), "PNG"), 100)
    np.testing.assert_allclose(rgb[0, 0], [1, 1, 1])
    np.testing.assert_allclose(rgb[0, 1], [0, 0, 0])
    np.testing.assert_allclose(rgb[0, 2], [1, 127 / 255, 127 / 255], atol=1e-6)


def test_palette_transparency_is_composited_too() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    image.putpixel((1, 0), 1)
    rgb = codec.decode_image(save(image, "PNG", transparency=0), 100)
    np.testing.assert_allclose(rgb[0, 0], [1, 1, 1])
    np.testing.assert_allclose(rgb[0, 1], np.array([10, 20, 30]) / 255, atol=1e-6)


def test_multi_frame_files_give_the_first_frame() -> None:
    frames = [Image.new("RGB", (4, 3), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("GIF", "TIFF", "WEBP"):
        data = save(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
        rgb = codec.decode_image(data, 100)
        assert rgb[1, 1, 0] > 0.9 and rgb[1, 1, 2] < 0.1, fmt


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left marker of the stored image
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    data = save(image, "PNG", exif=exif)
    assert codec.probe_image(data, 100) == (2, 4)
    rgb = codec.decode_image(data, 100)
    assert rgb.shape == (4, 2, 3)
    assert rgb[0, 1, 0] == 1.0  # the marker moved to the top-right corner
    assert rgb[:, :, 0].sum() == 1.0


def test_pixel_limit_is_checked_from_the_header() -> None:
    data = save(Image.new("L", (100, 100)), "PNG")
    assert codec.probe_image(data, 10_000) == (100, 100)
    with pytest.raises(TooLargeError):
        codec.probe_image(data, 9_999)
    with pytest.raises(TooLargeError):
        codec.decode_image(data, 9_999)


def test_pillow_bomb_guard_stays_on_and_maps_to_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None
    data = save(Image.new("L", (64, 64)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px: over Pillow's warning and error thresholds
    with pytest.raises(TooLargeError):
        codec.decode_image(data, max_pixels=10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x: Pillow only warns; we still refuse
    with pytest.raises(TooLargeError):
        codec.decode_image(data, max_pixels=10**9)


def test_unsupported_and_malformed_are_told_apart() -> None:
    with pytest.raises(UnsupportedImageError):
        codec.probe_image(b"%PDF-1.7 not an image", 100)
    with pytest.raises(UnsupportedImageError):  # a real image format we do not accept
        codec.probe_image(save(Image.new("RGB", (4, 4)), "PPM"), 100)
    with pytest.raises(MalformedImageError):
        codec.probe_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, 100)
    truncated = save(Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)), "PNG")
    with pytest.raises(MalformedImageError):
        codec.decode_image(truncated[: len(truncated) // 2], 10_000)


# -- encoding ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_round_trip(fmt: str) -> None:
    image = gradient(16, 12)
    data = codec.encode_image(image, fmt, quality=95)
    assert Image.open(io.BytesIO(data)).format == fmt.upper()
    decoded = codec.decode_image(data, 1000)
    assert np.abs(decoded - image).max() < (1 / 255 if fmt == "png" else 0.1)
    assert codec.media_type(fmt) == f"image/{fmt}"


def test_depth_png_is_16_bit_grey_or_colour_mapped() -> None:
    depth = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    grey = Image.open(io.BytesIO(codec.encode_depth(depth)))
    assert grey.mode.startswith("I") and grey.size == (5, 4)
    np.testing.assert_allclose(np.asarray(grey).astype(np.float64) / 65535, depth, atol=1e-5)
    colour = Image.open(io.BytesIO(codec.encode_depth(depth, colormap=True)))
    assert colour.mode == "RGB"
    rgb = np.asarray(colour).astype(int)
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[-1, -1, 0] > rgb[-1, -1, 2]  # near blue, far red


# -- float to 8 bits -----------------------------------------------------------------------------------------------
def exact_halves() -> np.ndarray:
    """The float32 values ``(k + 0.5) / 255``, k = 0..254, whose float32 product with 255 is exactly ``k + 0.5``."""
    k = np.arange(255, dtype=np.float32)
    halves = (k + np.float32(0.5)) / np.float32(255.0)
    assert np.array_equal(halves * np.float32(255.0), k + 0.5)
    return halves


def test_to_uint8_rounds_halves_up_and_clips() -> None:
    halves = exact_halves()
    np.testing.assert_array_equal(codec.to_uint8(halves), np.arange(1, 256))
    below = (np.arange(255, dtype=np.float32) + np.float32(0.49)) / np.float32(255.0)
    np.testing.assert_array_equal(codec.to_uint8(below), np.arange(0, 255))
    np.testing.assert_array_equal(codec.to_uint8(np.array([-0.5, 0.0, 1.0, 1.5])), [0, 0, 255, 255])


def test_encoded_png_holds_the_to_uint8_pixels() -> None:
    image = np.random.default_rng(1).choice(exact_halves(), size=(5, 7, 3))
    decoded = np.asarray(Image.open(io.BytesIO(codec.encode_image(image, "png"))))
    np.testing.assert_array_equal(decoded, codec.to_uint8(image))


class HalvesModel:
    """A stand-in model whose dehazed output is a fixed image of exact halves (cropped to the input's shape)."""

    def __init__(self, dehazed: np.ndarray) -> None:
        self.dehazed = torch.from_numpy(np.ascontiguousarray(dehazed.transpose(2, 0, 1)))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        return self.dehazed[:, :h, :w].expand(n, 3, h, w).clone(), x[:, :1].clone()


def test_dehaze_run_scores_the_8_bit_images_the_service_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dehaze run``'s FADE columns equal the service's FADE of the same upload and of the PNG it encodes.

    Input and output hold exact halves (k + 0.5)/255, where rounding half up and half to even disagree; one tile
    without overlap keeps the model's output bit-exact through the stitcher.
    """
    for name in [name for name in os.environ if name.startswith("DEHAZE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DEHAZE_TILE_OVERLAP", "0")
    rng = np.random.default_rng(2)
    height, width = 24, 40
    upload = save(Image.fromarray(rng.choice(exact_halves(), size=(height, width)), mode="F"), "TIFF")
    dehazed = rng.choice(exact_halves(), size=(64, 64, 3))  # the padded shape the model sees
    assert not np.array_equal(np.rint(dehazed * 255), codec.to_uint8(dehazed))  # the halves matter
    (tmp_path / "in.tif").write_bytes(upload)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"unused: the model is stubbed")
    monkeypatch.setattr("model.checkpoint.load_pipeline_from_weights", lambda path: HalvesModel(dehazed))

    table, out = tmp_path / "fade.csv", tmp_path / "out"
    argv = ["run", str(tmp_path / "in.tif"), "--out", str(out), "--fade-csv", str(table), "--weights", str(weights)]
    assert cli.main(argv) == 0

    png = (out / "in.png").read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), codec.to_uint8(dehazed[:height, :width]))
    with table.open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    max_pixels = Settings().density_max_pixels
    assert float(row["fade_in"]) == pytest.approx(fade_of_bytes(upload, max_pixels), rel=1e-12)
    assert float(row["fade_out"]) == pytest.approx(fade_of_bytes(png, max_pixels), rel=1e-12)
