"""`Predictor`: a trained checkpoint ready to serve, shared by every deployment mode.

The Gradio demos, batch scoring, the web service and the stream processor all call the same
`Predictor.predict` / `predict_batch`, so preprocessing and model code exist once.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

from going_modular.predictions import load_image
from going_modular.utils import load_model

RUNTIME_ENV = "FOODVISION_RUNTIME"


class Predictor:
    """Load a checkpoint once; predict images (anything `load_image` accepts).

    runtime: "eager" (PyTorch fp32, the fallback). Defaults to $FOODVISION_RUNTIME or "eager".
    """

    def __init__(self, checkpoint: str | os.PathLike, runtime: str | None = None,
                 class_names: list[str] | None = None, num_threads: int | None = None):
        self.checkpoint = Path(checkpoint)
        self.runtime = runtime or os.environ.get(RUNTIME_ENV, "eager")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.model, self.transform, ckpt = load_model(self.checkpoint, class_names=class_names)
        self.arch = ckpt["arch"]
        self.class_names = ckpt["class_names"]
        self._run = self._build_runtime(self.runtime)
        self._lock = threading.Lock()  # one forward at a time; torch already uses all cores

    def _build_runtime(self, runtime: str):
        if runtime == "eager":
            model = self.model
            if self.arch != "vit_b_16":  # CNNs run faster in channels_last on CPU
                model = model.to(memory_format=torch.channels_last)

            def run(batch: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return torch.softmax(model(batch.contiguous(memory_format=torch.channels_last)
                                               if self.arch != "vit_b_16" else batch), dim=1)
            return run
        raise ValueError(f"unknown runtime {runtime!r}; available: eager")

    def preprocess(self, image) -> torch.Tensor:
        """Any supported image input -> normalised CHW tensor (raises InvalidImageError)."""
        return self.transform(load_image(image))

    def probs(self, batch: torch.Tensor) -> torch.Tensor:
        with self._lock:
            return self._run(batch)

    def _result(self, p: torch.Tensor, seconds: float, top_k: int | None) -> dict:
        order = torch.argsort(p, descending=True)[: top_k or len(p)]
        probs = {self.class_names[i]: float(p[i]) for i in order}
        label = self.class_names[int(order[0])]
        return {"label": label, "prob": probs[label], "probs": probs, "seconds": round(seconds, 5)}

    def predict(self, image, top_k: int | None = None) -> dict:
        """{"label", "prob", "probs" (sorted, top_k), "seconds" (decode + transform + forward)}."""
        start = time.perf_counter()
        p = self.probs(self.preprocess(image).unsqueeze(0))[0]
        return self._result(p, time.perf_counter() - start, top_k)

    def predict_batch(self, images, top_k: int | None = None) -> list[dict]:
        """Predict several already-valid images in one forward pass (seconds = per image share)."""
        start = time.perf_counter()
        batch = torch.stack([self.preprocess(im) for im in images])
        p = self.probs(batch)
        per_image = (time.perf_counter() - start) / max(1, len(images))
        return [self._result(row, per_image, top_k) for row in p]
