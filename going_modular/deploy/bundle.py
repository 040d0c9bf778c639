"""The deployable bundle: one ONNX file that carries everything needed to serve it.

`python -m going_modular.export` (the training wing) writes it; the serving wing reads it with
ONNX Runtime alone. Besides the graph, the file's `metadata_props` hold one JSON document under the
key "foodvision":

    format              "foodvision-bundle-v1"
    arch                the architecture it was exported from (e.g. "effnet_lite0")
    class_names         output i is class_names[i]
    precision           "int8" or "fp32"
    input               {"layout": "NHWC", "dtype": "uint8", "size": 224, "resize": 256,
                         "interpolation": "bicubic", "mean": [...], "std": [...]}:
                        the graph takes RGB pixels 0-255, resized (short side) and centre-cropped
                        as the training transform does; mean/std normalisation is inside the graph
    source              {"checkpoint": file name, "sha256": of the .pth it was exported from}
    metrics             measured at export time on the test split: accuracy, images, top-1
                        agreement with eager PyTorch
    calibration         for int8: how many real training images set the activation ranges
    open_set            optional: {"threshold", "method", ...}: the graph's second output "ood_score"
                        says how far an image is from the known classes; above threshold = unknown
    reference           optional: the test split as the drift monitor compares with it (label counts,
                        unknowns, samples of confidence, ood_score, image statistics; see
                        `going_modular.deploy.monitor.reference`)
    exported_with       library versions

Nothing here imports torch: a Space or a server needs onnxruntime, numpy and Pillow only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from going_modular.deploy.errors import UserError
from going_modular.deploy.files import sha256sum

BUNDLE_FORMAT = "foodvision-bundle-v1"
METADATA_KEY = "foodvision"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Optional second graph output: one open-set score per image; above metadata open_set.threshold = unknown.
OOD_NAME = "ood_score"
PRECISIONS = ("int8", "fp32")
EXPORT_HINT = "python -m going_modular.export --checkpoint CHECKPOINT.pth"
MODEL_ID_CHARS = 12  # hex digits of the bundle's sha256 that name it in predictions and logs


class BundleError(UserError, RuntimeError):
    """A bundle is missing, unreadable, or does not describe itself consistently."""


def check_metadata(meta: dict, path: str | os.PathLike, num_outputs: int | None = None) -> dict:
    """Raise BundleError unless `meta` is a complete bundle description (matching the graph's outputs)."""
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is an ONNX file but not a FoodVision bundle (no {METADATA_KEY!r} metadata "
                          f"of format {BUNDLE_FORMAT}); re-export it with `{EXPORT_HINT}`")
    missing = [k for k in ("arch", "class_names", "precision", "input") if k not in meta]
    input_keys = ("size", "resize", "interpolation", "mean", "std")
    missing += [f"input.{k}" for k in input_keys if k not in meta.get("input", {})]
    if missing:
        raise BundleError(f"{path}: bundle metadata lacks {', '.join(missing)}; re-export it with `{EXPORT_HINT}`")
    names = meta["class_names"]
    if not names or len(set(names)) != len(names):
        raise BundleError(f"{path}: bundle class names must be unique and non-empty")
    if num_outputs is not None and num_outputs != len(names):
        raise BundleError(f"{path}: the model has {num_outputs} outputs but its metadata names {len(names)} "
                          f"classes; re-export it with `{EXPORT_HINT}`")
    return meta


def model_id(path: str | os.PathLike) -> str:
    """The bundle's identity in every answer and log line: the first MODEL_ID_CHARS hex digits of
    the sha256 of the file's bytes (a re-export, even of the same checkpoint, is another model)."""
    try:
        return sha256sum(path)[:MODEL_ID_CHARS]
    except OSError as e:
        raise BundleError(f"cannot read model file {path} ({e.strerror or type(e).__name__})") from e


def read_metadata(model_meta, path: str | os.PathLike) -> dict:
    """The bundle JSON from an ONNX Runtime ModelMetadata (`session.get_modelmeta()`)."""
    raw = model_meta.custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: its {METADATA_KEY!r} metadata is not valid JSON ({e})") from e


def open_session(path: str | os.PathLike, num_threads: int | None = None):
    """(onnxruntime.InferenceSession, metadata) for a bundle, with one clear BundleError on any problem."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"model bundle not found: {path}; create it with `{EXPORT_HINT}`")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads or 0  # 0: ONNX Runtime's default, one per physical core
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: spinning threads steal the core that decodes and resizes the
    # next image, and on a shared machine they burn CPU for nothing (`python -m benchmarks.latency`:
    # the rows with a CPU hog).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path} is not a readable ONNX model ({first}); re-create it with `{EXPORT_HINT}`") from e
    meta = read_metadata(session.get_modelmeta(), path)
    outputs = session.get_outputs()
    shape = outputs[0].shape if outputs else []
    check_metadata(meta, path, shape[-1] if shape and isinstance(shape[-1], int) else None)
    return session, meta


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class name per line; blank lines ignored; duplicates are an error."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"cannot read class names from {path} ({e})") from e
    if not names or len(set(names)) != len(names):
        raise BundleError(f"{path}: expected unique class names, one per line")
    return names
