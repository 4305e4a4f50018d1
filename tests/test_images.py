"""Safe decoding: every mode to RGB, EXIF orientation, and a clear error for each bad file."""
from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from core.images import (
    DEFAULT_MAX_MEGAPIXELS,
    MAX_MEGAPIXELS_ENV,
    ImageDecodeError,
    file_sha256,
    load_image,
    resolve_max_megapixels,
    to_rgb,
)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_rgb_png_from_path(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (8, 8)
    assert image.getpixel((3, 3)) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (8, 4), (0, 128, 255)).save(path, "JPEG", exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.size == (8, 4)
    assert load_image(path).size == (4, 8)


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (2, 1))
    image.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    rgb = load_image(encode(image, "PNG"))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (255, 0, 0)


def test_la_is_composited_on_white():
    image = Image.new("LA", (1, 1), (0, 0))
    assert load_image(encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    rgb = load_image(data)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (0, 255, 0)


def test_palette_without_transparency():
    image = Image.new("P", (1, 1))
    image.putpalette([10, 20, 30] + [0] * 765)
    assert load_image(encode(image, "GIF")).getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("mode, value, expected", [("L", 77, (77, 77, 77)), ("1", 1, (255, 255, 255))])
def test_gray_and_bilevel(mode, value, expected):
    image = Image.new(mode, (4, 4), value)
    assert load_image(encode(image, "PNG")).getpixel((0, 0)) == expected


def test_cmyk_jpeg_and_tiff():
    white = Image.new("CMYK", (8, 8), (0, 0, 0, 0))
    for fmt in ("JPEG", "TIFF"):
        rgb = load_image(encode(white, fmt))
        assert rgb.mode == "RGB"
        assert all(channel >= 250 for channel in rgb.getpixel((4, 4)))
    black = to_rgb(Image.new("CMYK", (1, 1), (0, 0, 0, 255)))
    assert black.getpixel((0, 0)) == (0, 0, 0)


def test_ycbcr_converts():
    image = Image.new("RGB", (2, 2), (200, 100, 50)).convert("YCbCr")
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert np.allclose(rgb.getpixel((0, 0)), (200, 100, 50), atol=3)


def test_16bit_png_is_scaled_not_clipped():
    values = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    rgb = np.asarray(load_image(data))
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 4]  # 1000 / 257 = 3.9
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_32bit_integer_beyond_16_bits_is_stretched():
    values = np.array([[-100_000, 0, 100_000]], dtype=np.int32)
    rgb = np.asarray(load_image(encode(Image.fromarray(values), "TIFF")))
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_float_images_are_scaled():
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert np.asarray(load_image(encode(Image.fromarray(unit), "TIFF")))[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[10.0, 20.0, 30.0]], dtype=np.float32)
    assert np.asarray(to_rgb(Image.fromarray(wide)))[0, :, 0].tolist() == [0, 128, 255]


def test_truncated_jpeg_fails_with_path(tmp_path):
    data = encode(noise_rgb(64, 64), "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value)


def test_corrupt_png_data_fails(tmp_path):
    data = bytearray(encode(noise_rgb(32, 32), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="corrupt.png"):
        load_image(path)


def test_random_bytes_are_not_an_image():
    with pytest.raises(ImageDecodeError, match="uploaded image: not an image"):
        load_image(bytes(range(256)) * 4)


def test_text_file_renamed_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageDecodeError, match="not an image") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty file"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="uploaded image: empty file"):
        load_image(b"")


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        load_image(tmp_path / "nowhere.jpg")


def test_bomb_guard_refuses_from_header(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 50)).save(path)  # 5,000 pixels
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, max_megapixels=0.004)
    message = str(info.value)
    assert "100x50 = 0.01 megapixels" in message
    assert "limit of 0.004 megapixels" in message
    assert "--max-megapixels" in message
    assert MAX_MEGAPIXELS_ENV in message
    assert load_image(path, max_megapixels=0.005).size == (100, 50)
    assert load_image(path, max_megapixels=0).size == (100, 50)  # 0 switches the guard off


def test_bomb_guard_reads_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 50)).save(path)
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "0.001")
    assert resolve_max_megapixels() == 0.001
    with pytest.raises(ImageDecodeError, match="limit of 0.001 megapixels"):
        load_image(path)
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_MEGAPIXELS_ENV):
        load_image(path)
    monkeypatch.delenv(MAX_MEGAPIXELS_ENV)
    assert resolve_max_megapixels() == DEFAULT_MAX_MEGAPIXELS


def test_pil_limit_does_not_interfere(monkeypatch):
    data = encode(Image.new("RGB", (100, 100)), "PNG")  # 10,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would refuse this image
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert load_image(data).size == (100, 100)

    # Above our limit, PIL's own error surfaces as ours, with the size.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"0\.01 megapixels, above the limit of 0\.002"):
        load_image(data, max_megapixels=0.002)


def test_bytes_and_stream_input():
    data = encode(Image.new("RGB", (8, 8), (1, 2, 3)), "JPEG", quality=100)
    assert load_image(data).size == (8, 8)
    assert load_image(bytearray(data)).size == (8, 8)

    stream = io.BytesIO(data)
    stream.name = "upload.jpg"
    stream.read(3)  # a stream already read from is rewound
    assert load_image(stream).size == (8, 8)
    with pytest.raises(ImageDecodeError, match="uploaded image 'upload.jpg'"):
        bad = io.BytesIO(b"hello")
        bad.name = "upload.jpg"
        load_image(bad)


def test_webp_upload():
    assert load_image(encode(Image.new("RGB", (8, 8)), "WEBP")).mode == "RGB"


def test_file_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    content = bytes(range(256)) * 1000
    path.write_bytes(content)
    expected = hashlib.sha256(content).hexdigest()
    assert file_sha256(path) == expected
    assert file_sha256(path, chunk_size=7) == expected
