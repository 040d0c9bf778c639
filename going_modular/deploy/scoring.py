"""Scoring many images where any may be unreadable: what the batch engines and the event stream share.

A bad file costs only its own entry ({"error": message}), never its batch-mates', and every entry
comes from the predictor's own `predict_batch`, so each mode answers exactly what the others do
for the same image.
"""
from __future__ import annotations

from pathlib import Path

from going_modular.deploy.errors import UserError
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError
from going_modular.deploy.monitor.stats import predict_batch_with_stats
from going_modular.deploy.predictor import Predictor


class ImageFolderError(UserError):
    """A folder to score that does not exist or holds no images."""


def find_images(root: Path) -> list[Path]:
    """Every image file under `root` (recursively), in a stable sorted order."""
    if not root.is_dir():
        raise ImageFolderError(f"input folder not found: {root}")
    images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageFolderError(f"no images found under {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return images


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())  # fits a CSV cell or a log line


def predict_each(predictor: Predictor, sources: list, top_k: int | None = None, stats: bool = False) -> list[dict]:
    """Predict several images in one forward pass, where any of them may be unreadable.

    The predictor's own predict_batch decodes and preprocesses, so rows are exactly what every
    other mode answers for the same file. A batch holding a bad image is redone one image at a
    time, so a bad file only costs its own entry ({"error": message}); that changes no other
    row, as a prediction does not depend on the batch it ran in (the shipped int8 bundle gives
    the same probabilities for an image alone and in a batch).
    stats=True (a prediction log is on): each result also holds "image", the image's statistics
    for the log (monitor.stats), measured on the pixels this pass decoded anyway.
    """
    try:
        return _predict(predictor, sources, top_k, stats)
    except InvalidImageError:
        return [predict_or_error(predictor, source, top_k, stats) for source in sources]


def _predict(predictor: Predictor, sources: list, top_k: int | None, stats: bool) -> list[dict]:
    if not stats:
        return predictor.predict_batch(sources, top_k=top_k)
    return [{**result, "image": image} for result, image in predict_batch_with_stats(predictor, sources, top_k)]


def predict_or_error(predictor: Predictor, source, top_k: int | None = None, stats: bool = False) -> dict:
    try:
        return _predict(predictor, [source], top_k, stats)[0]
    except InvalidImageError as e:
        return {"error": one_line(e)}


def score_sources(predictor: Predictor, sources: list[bytes | str], stats: bool = False) -> list[dict]:
    """Results for files read by read_or_error: their bytes are predicted, their read errors kept.
    Both engines score a batch through this (the Ray actors too), so their rows cannot differ.
    Every prediction names the model that made it (model_id, precision)."""
    readable = [i for i, source in enumerate(sources) if isinstance(source, bytes)]
    results = {i: {"error": source} for i, source in enumerate(sources) if not isinstance(source, bytes)}
    if readable:
        results.update(zip(readable, predict_each(predictor, [sources[i] for i in readable], stats=stats),
                           strict=True))
    identity = {"model_id": predictor.model_id, "precision": predictor.precision}
    return [results[i] if results[i].get("error") else {**results[i], **identity} for i in range(len(sources))]
