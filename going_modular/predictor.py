"""`Predictor`: a trained checkpoint ready to serve, shared by every deployment mode.

The Gradio demos, batch scoring, the web service and the stream processor all call the same
`Predictor.predict` / `predict_batch`, so preprocessing and model code exist once.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import torch

from going_modular.predictions import load_image
from going_modular.utils import load_model

RUNTIME_ENV = "FOODVISION_RUNTIME"
CACHE_ENV = "FOODVISION_CACHE"  # where exported ONNX files are kept (default ~/.cache/foodvision)
RUNTIMES = ("eager", "onnx", "onnx-int8")
log = logging.getLogger(__name__)


class Predictor:
    """Load a checkpoint once; predict images (anything `load_image` accepts).

    runtime (default $FOODVISION_RUNTIME or "eager"):
      "eager"     PyTorch fp32 (CNNs in channels_last): the reference, and the fallback;
      "onnx"      ONNX Runtime fp32, exported on first use into cache_dir;
      "onnx-int8" ONNX Runtime int8 (static QDQ for CNNs, calibrated on `calibration_images`;
                  dynamic for ViT). Without a cached int8 file or calibration images it falls
                  back to "onnx". `self.runtime` says what actually runs.
    """

    def __init__(self, checkpoint: str | os.PathLike, runtime: str | None = None,
                 class_names: list[str] | None = None, num_threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, calibration_images=None):
        self.checkpoint = Path(checkpoint)
        runtime = runtime or os.environ.get(RUNTIME_ENV, "eager")
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.cache_dir = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "foodvision")
        self.model, self.transform, ckpt = load_model(self.checkpoint, class_names=class_names)
        self.arch = ckpt["arch"]
        self.class_names = ckpt["class_names"]
        self.runtime, self._run = self._build_runtime(runtime, calibration_images)
        self._lock = threading.Lock()  # one forward at a time; torch/onnxruntime already use all cores

    def _build_runtime(self, runtime: str, calibration_images):
        """(runtime actually used, function: normalised batch -> softmax probabilities)."""
        if runtime == "eager":
            def run(batch: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return torch.softmax(self.model(batch), dim=1)
            return runtime, run
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: using the eager runtime")
            return self._build_runtime("eager", None)
        from going_modular import export

        int8 = runtime == "onnx-int8"
        if int8 and self.arch not in export.DYNAMIC_QUANT_ARCHS and calibration_images is None \
                and not export.onnx_paths(self.checkpoint, self.cache_dir)[1].is_file():
            log.warning("onnx-int8 needs calibration images or an exported int8 file "
                        "(python -m going_modular.export): using onnx fp32")
            runtime, int8 = "onnx", False
        path = export.ensure_onnx(self.checkpoint, self.cache_dir, self.model, self.transform, self.arch,
                                  int8=int8, calibration_images=calibration_images)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        # No busy-waiting between runs: spinning threads would steal the cores that decode and
        # resize the next image (measured: end-to-end latency nearly doubles with spinning on).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(batch: torch.Tensor) -> torch.Tensor:
            logits = session.run(None, {export.INPUT_NAME: batch.numpy()})[0]
            return torch.softmax(torch.from_numpy(logits), dim=1)
        return runtime, run

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
