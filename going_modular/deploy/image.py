"""Opening any image a user may send, without torch: the one image loader every mode shares.

Serving (the demos, the web service, batch scoring, streaming) and training both decode images
here, so a photo is read the same way when a model learns from it and when it is served.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What a folder of images may hold (the same list as torchvision's ImageFolder).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Images with more pixels than this (e.g. 12000x10000) are refused before decoding, not decoded into memory.
MAX_PIXELS = 120_000_000


class InvalidImageError(ValueError):
    """The input is not a usable image; the message says why, in words a user understands."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale to 8-bit 'L' (PIL's own convert would clip to white)."""
    arr = np.asarray(img, dtype=np.float64)
    hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    if img.mode == "F" and arr.max() <= 1.0:
        hi = 1.0
    return Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), mode="L")


def load_image(source, max_side_hint: int = 512) -> Image.Image:
    """Open anything a user may send (path, bytes, file object, PIL image, HxWxC array) as RGB.

    Handles EXIF rotation, greyscale, palette, RGBA/LA (composited on white), CMYK and
    16-bit images; draft-decodes huge JPEGs at reduced size. Raises InvalidImageError with a
    clear message for missing input, non-images, truncated/corrupt files and absurd sizes.
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
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise InvalidImageError("The uploaded file is empty.")
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
            raise InvalidImageError(f"Image file not found: {source}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(source)
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise InvalidImageError(f"Image is too large ({w}x{h}); the limit is {MAX_PIXELS // 1_000_000} megapixels.")
                if img.format == "JPEG":
                    img.draft("RGB", (max_side_hint, max_side_hint))  # decode big JPEGs at 1/2..1/8 scale: fast
                img.load()
        except InvalidImageError:
            raise
        except Image.DecompressionBombError as e:  # PIL refuses > 2x its own pixel limit before we can look
            raise InvalidImageError(f"Image is too large; the limit is {MAX_PIXELS // 1_000_000} megapixels.") from e
        except UnidentifiedImageError as e:
            raise InvalidImageError("This file is not an image we can read (JPEG, PNG, WebP, GIF, BMP...).") from e
        except (OSError, SyntaxError, ValueError) as e:  # truncated/corrupt data
            raise InvalidImageError(f"The image file is damaged or truncated ({e}).") from e
    if img.width < 1 or img.height < 1:
        raise InvalidImageError("The image has no pixels.")
    try:
        img = ImageOps.exif_transpose(img)  # phone photos: rotate as the camera meant
    except Exception:
        pass  # a broken EXIF block should not stop a prediction
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        img = background
    return img.convert("RGB")
