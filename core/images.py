"""Safe image decoding, shared by the embedding job and the app's upload path.

`load_image` returns a fully decoded RGB image with its EXIF orientation applied, or raises
`ImageDecodeError` naming the file and the cause. Images larger than a megapixel limit are refused
from their header, before any pixel is decoded (decompression-bomb guard).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

# PIL's own error threshold is 2 * Image.MAX_IMAGE_PIXELS (about 179 million pixels); ours sits just
# below it so that, by default, the two agree.
DEFAULT_MAX_MEGAPIXELS = 178.0
MAX_MEGAPIXELS_ENV = "SEMGAP_MAX_MEGAPIXELS"

# Formats the app accepts for uploads. Corpus files may be in any format PIL opens.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")
_WHITE = (255, 255, 255)


class ImageDecodeError(ValueError):
    """An image that cannot be used: unreadable, truncated, not an image, or too large."""

    def __init__(self, label: str, reason: str):
        super().__init__(f"{label}: {reason}")
        self.label = label  # the file path, or "uploaded image"
        self.reason = reason


def resolve_max_megapixels(max_megapixels: float | None = None) -> float:
    """Return the limit to apply: the argument, else $SEMGAP_MAX_MEGAPIXELS, else the default.

    A limit of 0 or below switches the guard off.
    """
    if max_megapixels is not None:
        return float(max_megapixels)
    value = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_MEGAPIXELS
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"{MAX_MEGAPIXELS_ENV}={value!r} is not a number: set it to a limit in megapixels, e.g. 300"
        ) from None


def load_image(source: ImageSource, max_megapixels: float | None = None) -> Image.Image:
    """Decode an image file, bytes or binary stream into a fully loaded RGB PIL image.

    EXIF orientation is applied; transparency is composited on white; 16- and 32-bit images are
    scaled to 8 bits. `max_megapixels` defaults to $SEMGAP_MAX_MEGAPIXELS or DEFAULT_MAX_MEGAPIXELS.
    Raises ImageDecodeError (a ValueError) naming the file and the cause.
    """
    limit = resolve_max_megapixels(max_megapixels)
    label, data = _read_source(source)
    if not data:
        raise ImageDecodeError(label, "empty file (0 bytes)")

    image = _open_checked(io.BytesIO(data), label, limit)
    try:
        image.load()
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, struct.error, ...
        raise ImageDecodeError(label, f"cannot decode {image.format or 'image'} data: {error}") from error

    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # a broken EXIF block should not cost the picture
        logger.warning("%s: EXIF orientation ignored (%s)", label, error)
    try:
        return to_rgb(image)
    except Exception as error:
        raise ImageDecodeError(label, f"cannot convert mode {image.mode} to RGB: {error}") from error


def _read_source(source: ImageSource) -> tuple[str, bytes]:
    """Return a label for messages and the raw bytes of the image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "uploaded image", bytes(source)

    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        try:
            with open(label, "rb") as file:
                return label, file.read()
        except OSError as error:
            raise ImageDecodeError(label, f"cannot read file: {error.strerror or error}") from error

    # A binary stream, e.g. Streamlit's UploadedFile: read it from the start.
    name = getattr(source, "name", None)
    if isinstance(name, str) and os.path.isabs(name):
        label = name
    else:
        label = f"uploaded image {name!r}" if isinstance(name, str) and name else "uploaded image"
    try:
        if source.seekable():
            source.seek(0)
        data = source.read()
    except (OSError, ValueError) as error:
        raise ImageDecodeError(label, f"cannot read stream: {error}") from error
    if not isinstance(data, (bytes, bytearray)):
        raise ImageDecodeError(label, f"expected a binary stream, got {type(data).__name__} from read()")
    return label, bytes(data)


def _open_checked(stream: BinaryIO, label: str, limit_megapixels: float) -> Image.Image:
    """Open (header only) and refuse images above the limit before any pixel is decoded."""
    limit_pixels = limit_megapixels * 1e6 if limit_megapixels > 0 else None
    _align_pil_limit(limit_pixels)

    try:
        # NOTE: catch_warnings is process-wide. PIL only warns here for images above our limit,
        # which are refused below anyway, so a warning filter seen by another thread is harmless.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as error:
        match = _BOMB_SIZE.search(str(error))
        size = f"{int(match.group(1)) / 1e6:,.2f} megapixels" if match else "too large"
        raise ImageDecodeError(label, _bomb_message(size, limit_megapixels)) from error
    except Image.UnidentifiedImageError as error:
        raise ImageDecodeError(label, "not an image file, or a format PIL cannot identify") from error
    except Exception as error:
        raise ImageDecodeError(label, f"corrupt image header: {error}") from error

    width, height = image.size
    if limit_pixels is not None and width * height > limit_pixels:
        size = f"{width}x{height} = {width * height / 1e6:,.2f} megapixels"
        raise ImageDecodeError(label, _bomb_message(size, limit_megapixels))
    return image


def _align_pil_limit(limit_pixels: float | None) -> None:
    """Keep PIL's own bomb check at or above ours so it never refuses an image we accept.

    PIL warns above Image.MAX_IMAGE_PIXELS and fails above twice that. The value is only ever
    raised, never lowered, so concurrent callers cannot undo each other.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None:
        return
    if limit_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif current < limit_pixels:
        Image.MAX_IMAGE_PIXELS = int(limit_pixels) + 1


def _bomb_message(size: str, limit_megapixels: float) -> str:
    return (
        f"image is {size}, above the limit of {limit_megapixels:g} megapixels "
        "(decompression-bomb guard). If you trust the file, raise the limit with "
        f"`python -m core embed --max-megapixels N` or the environment variable {MAX_MEGAPIXELS_ENV}=N."
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency on white, high bit depths scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return _composite_on_white(image)
    if mode.startswith("I") or mode == "F":
        return _scale_to_8bit(image).convert("RGB")
    # P, L, 1, CMYK, YCbCr, RGBX, HSV, ...; LAB has no direct conversion in PIL.
    return image.convert("RGB")


def _composite_on_white(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = _scale_to_8bit(image)
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Map a 16-bit, 32-bit integer or float image to 8-bit grayscale without clipping.

    16-bit modes (and 32-bit integer data within 0..65535, as 16-bit PNGs often open) are divided by
    257, so 65535 becomes 255. Floats within 0..1 are multiplied by 255. Anything else is stretched
    from its own minimum and maximum to 0..255.
    """
    try:
        values = np.asarray(image)
    except Exception:  # rare big-endian or packed modes numpy cannot view directly
        values = np.asarray(image.convert("I"))
    values = values.astype(np.float64)
    if values.ndim == 3:  # multi-channel high-depth data: keep the first channel
        values = values[..., 0]

    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode != "F" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
