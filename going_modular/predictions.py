"""Making predictions with a PyTorch model, the course's way: `predict`, `pred_and_store` and
`pred_and_plot_image`. Images are opened by the serving wing's `load_image`, so a photo is decoded
the same way in training, in these helpers and in every deployed mode.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from going_modular.deploy.image import InvalidImageError, load_image  # noqa: F401  (re-exported)


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
