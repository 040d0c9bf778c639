"""Opening any image a user may send, without torch: the one image loader every mode shares.

Serving (the demos, the web service, batch scoring, streaming) and training both decode images
here, so a photo is read the same way when a model learns from it and when it is served.

Decoding has a budget, checked from the file's header before any pixel is decoded: an image that
declares more than MAX_PIXELS pixels, or whose decode would need more than MAX_DECODE_MB of
memory, is refused with InvalidImageError (a 14 KB PNG can declare 10950x10950 16-bit pixels: 240
MB once decoded). Both limits can be set per process with $FOODVISION_MAX_PIXELS and
$FOODVISION_MAX_DECODE_MB. Large images are decoded reduced: JPEGs by the decoder itself (draft
mode, 1/2..1/8 scale), other formats by an integer box filter applied a strip of rows at a time
right after decoding, so no full-size converted copy of a big image is ever made.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from going_modular.deploy.errors import UsageError, UserError

# What a folder of images may hold (the same list as torchvision's ImageFolder).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Images declaring more pixels than this (e.g. 12000x10000) are refused before decoding.
MAX_PIXELS = 120_000_000
# Memory one decode may take (the decoded pixels, plus a progressive JPEG's coefficients), in MB:
# a 25-megapixel RGB PNG fits; huge JPEGs fit too, since they are decoded at reduced scale.
MAX_DECODE_MB = 100
PIXELS_ENV, DECODE_MB_ENV = "FOODVISION_MAX_PIXELS", "FOODVISION_MAX_DECODE_MB"
# Pixels converted at a time when reducing or converting a decoded image (a few MB of temporaries).
STRIP_PIXELS = 1 << 20
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Decoders that fill full-size buffers of their own before Pillow's copy: libwebp's frame, its
# previous frame and a bytes copy make a WebP decode peak at ~4x its pixels
# (`pytest tests/test_image_budget.py` measures each format's peak against this estimate).
DECODER_COPIES = {"WEBP": 4}


class InvalidImageError(UserError, ValueError):
    """The input is not a usable image; the message says why, in words a user understands."""


def _env_limit(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"${name} must be a positive whole number, got {value!r}")
    return int(value)


def decode_limits() -> tuple[int, int]:
    """(max pixels, max decode bytes) for this process: the environment, else the module constants."""
    return _env_limit(PIXELS_ENV, MAX_PIXELS), _env_limit(DECODE_MB_ENV, MAX_DECODE_MB) * 1_000_000


def _stored_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel: one for 1-bit, greyscale and palette images, two for 16-bit
    greyscale, four for everything else (Pillow pads RGB to four bytes)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _jpeg_coefficient_bytes(img: Image.Image) -> int:
    """A progressive JPEG is decoded through a buffer of every DCT coefficient of the *full-size*
    image (2 bytes each), whatever the draft scale: 3 bytes a pixel for usual 4:2:0 photos."""
    if img.format not in ("JPEG", "MPO") or not img.info.get("progressive"):
        return 0
    width, height = img.info.get("full_size", img.size)
    layers = getattr(img, "layer", None) or [("Y", 1, 1, 0)]
    hmax, vmax = max(h for _, h, _, _ in layers), max(v for _, _, v, _ in layers)
    return sum(math.ceil(width * h / hmax / 8) * math.ceil(height * v / vmax / 8) * 128 for _, h, v, _ in layers)


def _decode_bytes(img: Image.Image) -> int:
    """Memory the decode of an opened (not yet loaded) image will take, from its header alone."""
    width, height = img.size  # after draft(): the reduced size the JPEG decoder will produce
    copies = DECODER_COPIES.get(img.format, 1)
    return width * height * _stored_bytes_per_pixel(img.mode) * copies + _jpeg_coefficient_bytes(img)


@contextmanager
def _decoding():
    """Pillow's many ways of saying 'not an image' / 'damaged' / 'too big', as InvalidImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as e:  # PIL refuses > 2x its own pixel limit before we can look
        limit = decode_limits()[0] // 1_000_000
        raise InvalidImageError(f"Image is too large; the limit is {limit} megapixels.") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError("This file is not an image we can read (JPEG, PNG, WebP, GIF, BMP...).") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated/corrupt data
        raise InvalidImageError(f"The image file is damaged or truncated ({e}).") from e


def _open_within_budget(source, max_side_hint: int) -> tuple[Image.Image, int]:
    """Open an encoded image (path, bytes, file object), read its header only, set up a reduced
    JPEG decode, and refuse it unless its pixels and decode memory fit the budget.
    Returns the still undecoded image and the bytes its decode will take."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise InvalidImageError("The uploaded file is empty.")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise InvalidImageError(f"Image file not found: {source}")
    max_pixels, max_bytes = decode_limits()
    with _decoding():
        img = Image.open(source)
        w, h = img.size
        if w * h > max_pixels:
            raise InvalidImageError(f"Image is too large ({w}x{h}); the limit is {max_pixels // 1_000_000} megapixels.")
        if img.format in ("JPEG", "MPO"):
            img.info["full_size"] = img.size
            img.draft("RGB", (max_side_hint, max_side_hint))  # decode big JPEGs at 1/2..1/8 scale: fast, small
        needed = _decode_bytes(img)
        if needed > max_bytes:
            raise InvalidImageError(f"Image is too large ({w}x{h}): decoding it would take about "
                                    f"{math.ceil(needed / 1e6)} MB; the limit is {max_bytes // 1_000_000} MB.")
    return img, needed


def decoded_bytes_estimate(source, max_side_hint: int = 512) -> int:
    """Memory `load_image(source, max_side_hint)` will need to decode an encoded image (bytes or a
    path), read from its header alone: lets a service budget a whole request before decoding any
    of it. Raises InvalidImageError exactly where load_image would refuse the header."""
    img, needed = _open_within_budget(source, max_side_hint)
    img.close()
    return needed


def _full_scale(img: Image.Image) -> float:
    """The value that maps to white for a 16-bit / 32-bit / float greyscale image (from its extrema,
    computed without a copy): 65535 for 16-bit data, 255 for 8-bit values, 1.0 for 0..1 floats."""
    top = img.getextrema()[1]
    if img.mode == "F" and top <= 1.0:
        return 1.0
    return 65535 if img.mode.startswith("I;16") or top > 255 else 255


def _to_8bit(img: Image.Image, full_scale: float) -> Image.Image:
    """High-depth greyscale to 8-bit 'L' (Pillow's own convert would clip to white), in integer
    maths (float32 for float images): the temporaries are the size of `img`, a strip at most."""
    pixels = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(pixels, 0, full_scale) * np.float32(255 / full_scale)
    else:
        scaled = np.clip(pixels, 0, int(full_scale)).astype(np.uint32) * 255 // int(full_scale)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _reducible(strip: Image.Image, full_scale: float | None) -> Image.Image:
    """A strip in a mode Pillow can average: 1-bit -> L, palette -> RGBA, high depth -> 8-bit L."""
    if strip.mode == "1":
        return strip.convert("L")
    if strip.mode == "P":
        return strip.convert("RGBA")  # keeps a transparent palette entry transparent
    if strip.mode in HIGH_DEPTH_MODES:
        return _to_8bit(strip, full_scale)
    return strip


def _reduced(img: Image.Image, max_side_hint: int) -> Image.Image:
    """The decoded image in a reducible mode, shrunk by the largest whole factor that keeps both
    sides >= max_side_hint (as JPEG draft mode does), a strip of rows at a time."""
    factor = max(1, min(img.width // max_side_hint, img.height // max_side_hint))
    if factor == 1 and _reducible(img.crop((0, 0, 1, 1)), 255).mode == img.mode:
        return img  # nothing to shrink or convert: the common case of an ordinary photo
    full_scale = _full_scale(img) if img.mode in HIGH_DEPTH_MODES else None
    rows = max(1, STRIP_PIXELS // (img.width * factor)) * factor  # whole blocks: same result as one reduce
    out = None
    for top in range(0, img.height, rows):
        strip = _reducible(img.crop((0, top, img.width, min(top + rows, img.height))), full_scale)
        strip = strip.reduce(factor) if factor > 1 else strip
        if out is None:
            out = Image.new(strip.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))
        out.paste(strip, (0, top // factor))
    out.info = dict(img.info)  # keeps the EXIF orientation
    return out


def load_image(source, max_side_hint: int = 512) -> Image.Image:
    """Open anything a user may send (path, bytes, file object, PIL image, HxWxC array) as RGB.

    Handles EXIF rotation, greyscale, palette, RGBA/LA (composited on white), CMYK and
    16-bit images. An image whose sides are both at least 2 x max_side_hint comes back reduced by
    a whole factor, sides still >= max_side_hint (the model resizes it further anyway). Raises
    InvalidImageError with a clear message for missing input, non-images, truncated/corrupt files
    and images over the decode budget (module docstring), before decoding them.
    """
    if source is None:
        raise InvalidImageError("No image provided: upload a photo of food.")
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise InvalidImageError(f"Expected an HxW or HxWxC image array, got shape {source.shape}.")
        source = Image.fromarray(source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8))
    if isinstance(source, Image.Image):
        img = source
    else:
        img, _ = _open_within_budget(source, max_side_hint)
        with _decoding():
            img.load()
    if img.width < 1 or img.height < 1:
        raise InvalidImageError("The image has no pixels.")
    img = _reduced(img, max_side_hint)
    try:
        img = ImageOps.exif_transpose(img)  # phone photos: rotate as the camera meant
    except Exception:
        pass  # a broken EXIF block should not stop a prediction
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        img = background
    return img.convert("RGB")
