"""The serving predictor: a bundle in, predictions out, with ONNX Runtime, NumPy and Pillow only.

Every deployed mode (the Gradio demos, the web service, batch scoring, streaming) calls the same
`predict` / `predict_batch`, so preprocessing and the model exist once:

    from going_modular.deploy.predictor import load_predictor
    predictor = load_predictor("demos/foodvision_mini/foodvision_mini.int8.onnx")
    predictor.predict("pizza.jpg")   # {"label": "pizza", "prob": 0.98, "probs": {...}, "seconds": 0.003}

`Predictor` is the interface every mode relies on. `load_predictor` serves a bundle (.onnx) with
`OnnxPredictor`; other model files go to the loader registered for their suffix
(`register_loader`): the training wing registers the eager PyTorch reference for .pth/.pt
checkpoints when `going_modular` is imported, so nothing here imports torch or the training wing.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from going_modular.deploy.bundle import INPUT_NAME, OOD_NAME, BundleError, model_id, open_session, read_class_names
from going_modular.deploy.image import load_image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO / "demos" / "foodvision_mini" / "foodvision_mini.int8.onnx"
THREADS_ENV = "FOODVISION_THREADS"

INTERPOLATION = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                 "bicubic": Image.Resampling.BICUBIC}


def default_threads() -> int | None:
    """ONNX Runtime intra-op threads: $FOODVISION_THREADS, else None (ONNX Runtime's own choice)."""
    value = os.environ.get(THREADS_ENV)
    return int(value) if value else None


def resize_crop(img: Image.Image, resize: int, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """torchvision's eval transform `Resize(resize)` + `CenterCrop(size)` on uint8 pixels -> (size, size, 3).

    Same output size rounding and crop offsets as torchvision, and the same Pillow filter, but
    only the cropped window is resampled (Pillow's `box`): the resized pixels that the crop would
    throw away are never computed. Pixels differ from torchvision's by float rounding at most
    (tests/test_bundle.py states the largest difference).
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    sx, sy = w / new_w, h / new_h
    if (new_w, new_h) == (w, h):  # torchvision skips the resize: a plain crop
        img = img.crop((left, top, left + size, top + size))
    else:
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        img = img.resize((size, size), INTERPOLATION[interpolation], box=box)
    return np.asarray(img, dtype=np.uint8)


def preprocess_pixels(image, spec: dict) -> np.ndarray:
    """Any supported image input -> the bundle's input pixels, (size, size, 3) uint8 RGB.

    JPEGs at least twice the resize size are decoded at reduced scale (Pillow `draft`: libjpeg
    skips the DCT detail it would resize away), which roughly halves the preprocessing time of
    Food-101's 512-pixel photos (end-to-end latency in `python -m benchmarks.latency`), with top-1
    identical to the training transform on all 150 test images and pixels within 57 grey levels of
    it on the drafted ones (`pytest -s tests/test_bundle.py` prints the difference and asserts the top-1).
    """
    img = load_image(image, max_side_hint=spec["resize"])
    return resize_crop(img, spec["resize"], spec["size"], spec["interpolation"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def result_dict(class_names: list[str], p: np.ndarray, seconds: float, top_k: int | None = None,
                ood_score: float | None = None, threshold: float | None = None) -> dict:
    """One prediction as every mode reports it: {"label", "prob", "probs" (highest first, top_k),
    "seconds", "known", "ood_score"}.

    known: False when the open-set score is above the bundle's threshold (the image is not one of
    `class_names`: another dish, not food at all); None, with ood_score None, for a model
    without an open-set score (the eager reference, an older bundle).
    """
    order = np.argsort(-p, kind="stable")[: top_k or len(p)]
    probs = {class_names[i]: float(p[i]) for i in order}
    label = class_names[int(order[0])]
    known = None if ood_score is None else bool(ood_score <= threshold)
    return {"label": label, "prob": probs[label], "probs": probs, "seconds": round(seconds, 5), "known": known,
            "ood_score": None if ood_score is None else round(float(ood_score), 4)}


@runtime_checkable
class Predictor(Protocol):
    """What every mode needs of a predictor: `OnnxPredictor` here, `going_modular.eager.EagerPredictor`
    (the PyTorch reference) in the training wing."""

    class_names: list[str]
    arch: str  # the architecture it was trained as, e.g. "effnet_lite0"
    runtime: str  # what runs it: "onnx-int8", "onnx-fp32", "eager"
    precision: str  # "int8" or "fp32"
    path: Path  # the model file it was loaded from
    model_id: str  # model_id(path)
    ood_threshold: float | None  # open-set score above which an image is unknown; None: no score

    def preprocess(self, image): ...

    def scores(self, items) -> tuple[np.ndarray, np.ndarray | None]: ...

    def forward(self, items) -> list[tuple[np.ndarray, float | None]]: ...

    def result(self, row: tuple[np.ndarray, float | None], seconds: float, top_k: int | None = None) -> dict: ...

    def predict(self, image, top_k: int | None = None) -> dict: ...

    def predict_batch(self, images, top_k: int | None = None) -> list[dict]: ...


class Predicting:
    """The `Predictor` methods on top of a subclass's `preprocess`, `probs` and attributes: shared by
    the bundle predictor below and the eager PyTorch reference."""

    class_names: list[str]
    arch: str
    runtime: str
    precision: str
    path: Path
    model_id: str
    ood_threshold: float | None = None  # None: no open-set score

    def preprocess(self, image):
        raise NotImplementedError

    def probs(self, items) -> np.ndarray:
        raise NotImplementedError

    def scores(self, items) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, classes), open-set scores (N,) or None), in one forward pass."""
        return self.probs(items), None

    def predict(self, image, top_k: int | None = None) -> dict:
        """{"label", "prob", "probs" (sorted, top_k), "seconds" (decode + preprocess + forward),
        "known", "ood_score"}."""
        return self.predict_batch([image], top_k)[0]

    def forward(self, items) -> list[tuple[np.ndarray, float | None]]:
        """One forward pass over preprocessed items -> per item (probabilities, open-set score or None):
        the unit a micro-batcher hands back to each waiting request (turn it into a dict with `result`)."""
        p, ood = self.scores(items)
        return [(row, None if ood is None else float(ood[i])) for i, row in enumerate(p)]

    def result(self, row: tuple[np.ndarray, float | None], seconds: float, top_k: int | None = None) -> dict:
        """One item of `forward` as the result dict every mode reports."""
        probs, ood_score = row
        return result_dict(self.class_names, probs, seconds, top_k, ood_score, self.ood_threshold)

    def predict_batch(self, images, top_k: int | None = None) -> list[dict]:
        """Predict several valid images in one forward pass (seconds = each image's share)."""
        start = time.perf_counter()
        rows = self.forward([self.preprocess(im) for im in images])
        per_image = (time.perf_counter() - start) / max(1, len(rows))
        return [self.result(row, per_image, top_k) for row in rows]


class OnnxPredictor(Predicting):
    """A FoodVision bundle (.onnx written by `going_modular.export`) ready to serve.

    Thread-safe without a lock: decoding and resizing run in the caller's thread (Pillow releases
    the GIL), and ONNX Runtime sessions accept concurrent `run` calls.
    """

    def __init__(self, path: str | os.PathLike = DEFAULT_BUNDLE, class_names: list[str] | None = None,
                 num_threads: int | None = None, precision: str | None = None):
        self.path = Path(path)
        self.num_threads = num_threads if num_threads is not None else default_threads()
        self.session, self.meta = open_session(self.path, self.num_threads)
        self.model_id = model_id(self.path)
        self.arch = self.meta["arch"]
        self.class_names = list(self.meta["class_names"])
        self.precision = self.meta["precision"]
        self.runtime = f"onnx-{self.precision}"
        if precision is not None and precision != self.precision:
            raise BundleError(f"{self.path} is a {self.precision} bundle but {precision} was asked for; "
                              f"export one with `python -m going_modular.export --precision {precision}`")
        if class_names is not None and list(class_names) != self.class_names:
            raise BundleError(f"class names do not match bundle {self.path}: got {len(class_names)} names "
                              f"{list(class_names)[:5]}..., the bundle has {len(self.class_names)} "
                              f"{self.class_names[:5]}...")
        # A bundle with an open-set score has a second output and its threshold in the metadata.
        names = [o.name for o in self.session.get_outputs()]
        self._outputs = names[:1] + ([OOD_NAME] if OOD_NAME in names and "open_set" in self.meta else [])
        self.ood_threshold = self.meta["open_set"]["threshold"] if len(self._outputs) > 1 else None
        spec = self.meta["input"]
        self.size, self.resize, self.interpolation = spec["size"], spec["resize"], spec["interpolation"]
        if self.interpolation not in INTERPOLATION or self.resize < self.size:
            raise BundleError(f"{self.path}: unsupported input spec {spec}")

    def __repr__(self) -> str:
        return f"OnnxPredictor({self.path.name}: {self.arch}, {len(self.class_names)} classes, {self.runtime})"

    def preprocess(self, image) -> np.ndarray:
        """Any supported image input -> (size, size, 3) uint8 RGB (raises InvalidImageError)."""
        return preprocess_pixels(image, self.meta["input"])

    def probs(self, items: list[np.ndarray]) -> np.ndarray:
        """Softmax probabilities (N, classes) for preprocessed images, in one forward pass."""
        return self.scores(items)[0]

    def scores(self, items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(softmax probabilities (N, classes), open-set scores (N,) or None) in one forward pass."""
        outputs = self.session.run(self._outputs, {INPUT_NAME: np.stack(items)})
        p = softmax(outputs[0].astype(np.float32, copy=False))
        return p, (outputs[1] if len(outputs) > 1 else None)


# Model-file suffix -> loader(path, class_names=, num_threads=) returning a Predictor.
LOADERS: dict[str, Callable[..., Predictor]] = {}


def register_loader(suffixes: tuple[str, ...], loader: Callable[..., Predictor]) -> None:
    """Serve model files with these suffixes (".pth") through `loader` (another wing's predictor)."""
    LOADERS.update(dict.fromkeys(suffixes, loader))


def load_predictor(path: str | os.PathLike = DEFAULT_BUNDLE, class_names: list[str] | str | os.PathLike | None = None,
                   num_threads: int | None = None) -> Predictor:
    """The predictor for a model file: a file whose suffix has a registered loader (a .pth
    checkpoint: the eager PyTorch reference), else a bundle served by ONNX Runtime.
    `class_names` (a list, or a class-names file) must equal the model's. Raises a UserError
    (BundleError, or the loader's own) that says what is wrong."""
    path = Path(path)
    if class_names is not None and not isinstance(class_names, (list, tuple)):
        class_names = read_class_names(class_names)
    loader = LOADERS.get(path.suffix.lower())
    if loader is not None:
        return loader(path, class_names=class_names, num_threads=num_threads)
    return OnnxPredictor(path, class_names=class_names, num_threads=num_threads)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model options every serving CLI shares (batch scoring, the web service, streaming)."""
    parser.add_argument("--model", "--checkpoint", dest="model", type=Path, default=DEFAULT_BUNDLE,
                        help="bundle (.onnx from going_modular.export; default: the shipped FoodVision Mini "
                             "int8 bundle) or a training checkpoint (.pth, served by eager PyTorch)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help=f"inference threads (env {THREADS_ENV}; default: one per core)")


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    return load_predictor(args.model, num_threads=args.threads)
