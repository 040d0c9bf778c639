"""Making predictions with a PyTorch model, the course's way: `predict`, `pred_and_store` and
`pred_and_plot_image`. Images are opened by the serving wing's `load_image`, so a photo is decoded
the same way in training, in these helpers and in every deployed mode. `device` defaults to the
device the model is on, so a model moved to the GPU once is used there.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as F

from going_modular.deploy.image import load_image


def _device_of(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def apply_transform(transform, img: Image.Image) -> torch.Tensor:
    """`transform(img)` for the PIL-expecting transforms (the models' own, ImageFolder's); a transform
    that wants a tensor (the course's helper feeds `read_image(path) / 255`) gets that float tensor."""
    try:
        x = transform(img)
    except TypeError:  # e.g. T.Normalize without T.ToTensor: "tensor should be a torch tensor"
        x = None
    return x if isinstance(x, torch.Tensor) else transform(F.to_tensor(img))


@torch.inference_mode()
def predict_probs(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities for a batch of transformed images."""
    model.eval()
    return torch.softmax(model(batch), dim=1)


def predict(img, model: nn.Module, transform, class_names: list[str],
            device: torch.device | str | None = None) -> tuple[dict, float]:
    """Predict one image. Returns ({class_name: prob}, seconds taken)."""
    start = time.perf_counter()
    x = apply_transform(transform, load_image(img)).unsqueeze(0).to(_device_of(model, device))
    probs = predict_probs(model, x)[0].cpu()
    return {c: float(p) for c, p in zip(class_names, probs, strict=True)}, round(time.perf_counter() - start, 5)


def pred_and_store(paths, model: nn.Module, transform, class_names: list[str],
                   device: torch.device | str | None = None) -> list[dict]:
    """Predict each image path; the true class is its parent folder's name.

    Returns one dict per image: image_path, class_name, pred_class, pred_prob, correct,
    time_for_pred (seconds, including opening and transforming the image).
    """
    from tqdm.auto import tqdm

    device = _device_of(model, device)
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
                        image_size: tuple[int, int] = (224, 224), device: torch.device | str | None = None):
    """Predict an image and plot it with the predicted label and probability as the title."""
    import matplotlib.pyplot as plt
    from torchvision import transforms as T

    if transform is None:
        transform = T.Compose([T.Resize(image_size), T.ToTensor(),
                               T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    img = load_image(image_path)
    device = _device_of(model, device)
    probs, _ = predict(img, model.to(device), transform, class_names, device)
    label = max(probs, key=probs.get)
    plt.figure()
    plt.imshow(img)
    plt.title(f"Pred: {label} | Prob: {probs[label]:.3f}")
    plt.axis(False)
    return label, probs[label]
