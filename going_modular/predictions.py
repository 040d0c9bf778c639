"""Making predictions: robust image loading (`load_image`), `predict`, `pred_and_store` and
`pred_and_plot_image`. `predictor.Predictor` wraps these for every deployment mode.
"""
from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

# Up to 10000x10000 (100 MP) is decoded; beyond this we refuse instead of exhausting memory.
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


@torch.inference_mode()
def predict_probs(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities for a batch of transformed images."""
    model.eval()
    return torch.softmax(model(batch), dim=1)


def predict(img, model: nn.Module, transform, class_names: list[str],
            device: torch.device | str = "cpu") -> tuple[dict, float]:
    """Predict one image. Returns ({class_name: prob}, seconds taken)."""
    start = time.perf_counter()
    x = transform(load_image(img)).unsqueeze(0).to(device)
    probs = predict_probs(model, x)[0].cpu()
    return {c: float(p) for c, p in zip(class_names, probs)}, round(time.perf_counter() - start, 5)


def pred_and_store(paths, model: nn.Module, transform, class_names: list[str],
                   device: torch.device | str = "cpu") -> list[dict]:
    """Predict each image path; the true class is its parent folder's name.

    Returns one dict per image: image_path, class_name, pred_class, pred_prob, correct,
    time_for_pred (seconds, including opening and transforming the image).
    """
    from tqdm.auto import tqdm

    model.to(device).eval()
    results = []
    for path in tqdm(list(paths), desc="predicting"):
        probs, seconds = predict(path, model, transform, class_names, device)
        pred_class = max(probs, key=probs.get)
        true_class = Path(path).parent.name
        results.append({"image_path": str(path), "class_name": true_class, "pred_class": pred_class,
                        "pred_prob": round(probs[pred_class], 4), "correct": true_class == pred_class,
                        "time_for_pred": seconds})
    return results


def pred_and_plot_image(model: nn.Module, image_path, class_names: list[str], transform=None,
                        image_size: tuple[int, int] = (224, 224), device: torch.device | str = "cpu"):
    """Predict an image and plot it with the predicted label and probability as the title."""
    import matplotlib.pyplot as plt
    from torchvision import transforms as T

    if transform is None:
        transform = T.Compose([T.Resize(image_size), T.ToTensor(),
                               T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    img = load_image(image_path)
    probs, _ = predict(img, model.to(device), transform, class_names, device)
    label = max(probs, key=probs.get)
    plt.figure()
    plt.imshow(img)
    plt.title(f"Pred: {label} | Prob: {probs[label]:.3f}")
    plt.axis(False)
    return label, probs[label]
