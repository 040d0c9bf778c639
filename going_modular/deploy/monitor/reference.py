"""The reference the drift monitor compares live traffic with: what the model saw and said on its
test split, recorded when the bundle is exported (metadata "reference"), or afterwards for a
bundle exported without one:

    python -m going_modular.deploy.monitor.reference --bundle demos/foodvision_mini/foodvision_mini.int8.onnx \
        --data data/pizza_steak_sushi_20_percent/test --out foodvision_mini.reference.json

The reference holds, for the test images: the predicted label counts, how many were flagged
unknown, and a small sample (sorted values; at most SAMPLE_SIZE quantiles) of each statistic the
monitor tests: confidence (top probability), open-set score, brightness, contrast, aspect ratio.
The images go through `predict_batch_with_stats`, the statistics the prediction log records.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from going_modular.deploy import cli
from going_modular.deploy.errors import UserError
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError
from going_modular.deploy.monitor.stats import predict_batch_with_stats

REFERENCE_FORMAT = "foodvision-reference-v1"
REFERENCE_KEY = "reference"  # its key in the bundle metadata
SAMPLE_SIZE = 256  # values kept per statistic: a 150-image test split exactly, larger ones as quantiles
# The numeric statistics, and the digits they are kept to.
SAMPLED = {"prob": 4, "ood_score": 4, "brightness": 2, "contrast": 2, "aspect": 4}


class ReferenceDataError(UserError, ValueError):
    """No usable test images to compute a reference from: one line says why."""


def aspect(record: dict) -> float | None:
    """Width over height of a logged or reference image (None when unknown)."""
    w, h = record.get("width"), record.get("height")
    return w / h if w and h else None


def sample(values, digits: int) -> list[float]:
    """A small, sorted stand-in for a distribution: the values themselves, or SAMPLE_SIZE quantiles."""
    values = np.sort(np.asarray([v for v in values if v is not None], dtype=np.float64))
    if len(values) > SAMPLE_SIZE:
        values = np.quantile(values, (np.arange(SAMPLE_SIZE) + 0.5) / SAMPLE_SIZE)
    return [round(float(v), digits) for v in values]


def compute_reference(predictor, images, batch_size: int = 32, description: str = "test split") -> dict:
    """The reference of `predictor` (an OnnxPredictor) on `images` (paths or bytes: its test split).

    Unreadable images are skipped and counted. Raises ValueError when none is readable.
    """
    rows, unreadable = [], 0
    for i in range(0, len(images), batch_size):
        chunk = list(images[i:i + batch_size])
        try:
            rows += predict_batch_with_stats(predictor, chunk)
        except InvalidImageError:  # one bad file: the rest of the chunk one by one
            for image in chunk:
                try:
                    rows += predict_batch_with_stats(predictor, [image])
                except InvalidImageError:
                    unreadable += 1
    if not rows:
        raise ReferenceDataError(f"no readable images to compute the reference from ({unreadable} unreadable)")
    labels = dict.fromkeys(predictor.class_names, 0)
    for result, _ in rows:
        labels[result["label"]] += 1
    has_ood = rows[0][0].get("known") is not None
    values = {"prob": [r["prob"] for r, _ in rows],
              "ood_score": [r["ood_score"] for r, _ in rows] if has_ood else [],
              "brightness": [s["brightness"] for _, s in rows], "contrast": [s["contrast"] for _, s in rows],
              "aspect": [aspect(s) for _, s in rows]}
    return {"format": REFERENCE_FORMAT, "data": description, "images": len(rows), "unreadable": unreadable,
            "labels": labels, "unknown": sum(r["known"] is False for r, _ in rows) if has_ood else None,
            "samples": {k: sample(v, SAMPLED[k]) if v else None for k, v in values.items()}}


def reference_document(predictor, images, description: str) -> dict:
    """The reference of an already exported bundle, as the JSON file the monitor's --reference reads:
    compute_reference plus the model id and bundle name it belongs to."""
    return {"model_id": predictor.model_id, "bundle": predictor.path.name,
            **compute_reference(predictor, images, description=description)}


def image_files(folder: Path) -> list[Path]:
    """Every image under `folder` (recursively, sorted)."""
    if not folder.is_dir():
        raise ReferenceDataError(f"no folder of test images at {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ReferenceDataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path, help="the deployed bundle (.onnx)")
    p.add_argument("--data", required=True, type=Path,
                   help="a folder of the bundle's test images (searched recursively), none used in training")
    p.add_argument("--out", required=True, type=Path, help="the reference JSON to write")
    return p


def main(argv=None) -> int:
    from going_modular.deploy.predictor import OnnxPredictor

    args = get_args_parser().parse_args(argv)
    predictor = OnnxPredictor(args.bundle)
    files = image_files(args.data)
    reference = reference_document(predictor, files, f"{args.data} ({len(files)} images)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reference, indent=1) + "\n")
    unknown = "" if reference["unknown"] is None else f", {reference['unknown']} flagged unknown"
    print(f"reference of {args.bundle.name} (model {predictor.model_id}) from {reference['images']} images"
          f"{unknown}: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
