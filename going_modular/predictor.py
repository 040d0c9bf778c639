"""`EagerPredictor`: a training checkpoint (.pth) served by eager PyTorch, the reference.

It answers through the same interface as the serving wing's `deploy.predictor.OnnxPredictor`
(`predict`, `predict_batch`, `preprocess` + `probs`, `class_names`, `arch`, `runtime`), with the
model's own torchvision transform, so a learner can serve what they just trained and every
exported bundle can be checked against it (`going_modular.export` does, on the test split).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from going_modular.deploy.image import load_image
from going_modular.deploy.predictor import Predicting
from going_modular.utils import load_model


class EagerPredictor(Predicting):
    """Load a checkpoint once; predict images (anything `load_image` accepts) with PyTorch fp32."""

    runtime = "eager"

    def __init__(self, checkpoint: str | os.PathLike, class_names: list[str] | None = None,
                 num_threads: int | None = None, device: str | torch.device = "cpu"):
        self.path = Path(checkpoint)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.model, self.transform, ckpt = load_model(self.path, class_names=class_names, device=self.device)
        self.arch = ckpt["arch"]
        self.class_names = ckpt["class_names"]
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    def __repr__(self) -> str:
        return f"EagerPredictor({self.path.name}: {self.arch}, {len(self.class_names)} classes)"

    def preprocess(self, image) -> torch.Tensor:
        """Any supported image input -> the model's normalised CHW tensor (raises InvalidImageError)."""
        return self.transform(load_image(image))

    def probs(self, items) -> np.ndarray:
        """Softmax probabilities (N, classes) for preprocessed images (a list or a stacked batch)."""
        batch = items if isinstance(items, torch.Tensor) else torch.stack(list(items))
        with self._lock, torch.inference_mode():
            return torch.softmax(self.model(batch.to(self.device)), dim=1).float().cpu().numpy()
