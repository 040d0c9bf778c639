"""`EagerPredictor`: a training checkpoint (.pth) served by eager PyTorch, the reference.

It implements the serving wing's `Predictor` protocol (`predict`, `predict_batch`, `preprocess` +
`probs`, `class_names`, `arch`, `runtime`, `precision`, `path`, `model_id`) with the model's own
torchvision transform, so a learner can serve what they just trained and every exported bundle
can be checked against it (`going_modular.export` does, on the test split).

The serving wing never imports this module: `going_modular/__init__.py` registers `load_eager` as
the loader of .pth/.pt files (`deploy.predictor.register_loader`), which is how
`python -m going_modular.deploy.serve --model X.pth` (and every other serving CLI) reaches it.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch

from going_modular.deploy.image import load_image
from going_modular.deploy.predictor import Predicting, model_id
from going_modular.predictions import predict_probs
from going_modular.utils import load_model

log = logging.getLogger(__name__)


class EagerPredictor(Predicting):
    """Load a checkpoint once; predict images (anything `load_image` accepts) with PyTorch fp32."""

    runtime = "eager"
    precision = "fp32"

    def __init__(self, checkpoint: str | os.PathLike, class_names: list[str] | None = None,
                 num_threads: int | None = None, device: str | torch.device = "cpu"):
        self.path = Path(checkpoint)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.model, self.transform, ckpt = load_model(self.path, class_names=class_names, device=self.device)
        self.arch = ckpt["arch"]
        self.class_names = ckpt["class_names"]
        self.model_id = model_id(self.path)
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    def __repr__(self) -> str:
        return f"EagerPredictor({self.path.name}: {self.arch}, {len(self.class_names)} classes)"

    def preprocess(self, image) -> torch.Tensor:
        """Any supported image input -> the model's normalised CHW tensor (raises InvalidImageError)."""
        return self.transform(load_image(image))

    def probs(self, items) -> np.ndarray:
        """Softmax probabilities (N, classes) for preprocessed images (a list or a stacked batch)."""
        batch = items if isinstance(items, torch.Tensor) else torch.stack(list(items))
        with self._lock:
            return predict_probs(self.model, batch.to(self.device)).float().cpu().numpy()


def load_eager(path: str | os.PathLike, class_names: list[str] | None = None,
               num_threads: int | None = None) -> EagerPredictor:
    """The serving wing's loader for checkpoints (logged, so the slow reference is never served silently)."""
    log.warning("serving %s with eager PyTorch (the reference runtime); deploy a bundle from "
                "`python -m going_modular.export` for the fast torch-free path", path)
    return EagerPredictor(path, class_names=class_names, num_threads=num_threads)
