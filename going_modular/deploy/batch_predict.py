"""Batch scoring: predict every image under a folder and write one CSV row per image.

    python -m going_modular.deploy.batch_predict --input photos/ --output predictions.csv

Rows are `path,label,prob,top3,seconds,error` with `path` relative to --input. The run is
resumable: images already in the output are skipped, so a re-run after a crash or Ctrl-C
only scores what is missing. An unreadable image gets a row with `error` filled in and the
run goes on. The output file is only ever replaced whole (os.replace), so it is never
half-written; progress in between is journalled to OUTPUT.partial and flushed every batch.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

from going_modular.deploy.bundle import BundleError
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError, load_image
from going_modular.deploy.predictor import Predicting, add_model_args, predictor_from_args

FIELDS = ["path", "label", "prob", "top3", "seconds", "error"]


class BatchError(RuntimeError):
    """The input folder or output file cannot be used; the message says why."""


def find_images(root: Path) -> list[Path]:
    """Every image file under `root` (recursively), in a stable sorted order."""
    if not root.is_dir():
        raise BatchError(f"input folder not found: {root}")
    images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise BatchError(f"no images found under {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return images


def read_rows(path: Path) -> list[dict]:
    """Complete rows of a CSV we wrote earlier; a torn last line (crash mid-write) is ignored."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if text and reader.fieldnames != FIELDS:
        raise BatchError(f"{path} exists but is not a batch_predict CSV (columns {reader.fieldnames}); "
                         f"choose another --output")
    return [row for row in reader if None not in row.values()]


def format_top3(probs: dict) -> str:
    """'pizza:0.9803;sushi:0.0171;steak:0.0025' (probs is already sorted, highest first)."""
    return ";".join(f"{name}:{p:.4f}" for name, p in list(probs.items())[:3])


def predict_each(predictor: Predicting, sources: list, top_k: int | None = None) -> list[dict]:
    """Predict several images in one forward pass, where any of them may be unreadable.

    Each source is decoded on its own, so a bad file only costs its own entry
    ({"error": message}); the readable ones go through the model together. Shared by batch
    scoring and the web service's /predict/batch.
    """
    images, results = {}, {}
    for i, source in enumerate(sources):
        try:
            images[i] = load_image(source)
        except InvalidImageError as e:
            results[i] = {"error": " ".join(str(e).split())}  # one line: fits a CSV cell or a log
    if images:
        results.update(zip(images, predictor.predict_batch(list(images.values()), top_k=top_k)))
    return [results[i] for i in range(len(sources))]


def score_batch(predictor: Predicting, root: Path, paths: list[Path]) -> list[dict]:
    """CSV rows for one batch of image files."""
    start = time.perf_counter()
    results = predict_each(predictor, paths)
    per_image = round((time.perf_counter() - start) / len(paths), 5)  # decode + forward share
    rows = []
    for path, result in zip(paths, results):
        row = {"path": path.relative_to(root).as_posix(), "label": "", "prob": "", "top3": "", "seconds": "",
               "error": result.get("error", "")}
        if not row["error"]:
            row.update(label=result["label"], prob=f"{result['prob']:.4f}", top3=format_top3(result["probs"]),
                       seconds=per_image)
        rows.append(row)
    return rows


def score_folder(predictor: Predicting, input_dir: str | Path, output: str | Path, batch_size: int = 8,
                 progress: bool = True) -> dict:
    """Score every image under `input_dir` not yet in `output`; returns a summary dict
    {"total", "skipped", "scored", "errors", "seconds", "images_per_s", "output"}."""
    from tqdm.auto import tqdm

    root, output = Path(input_dir), Path(output)
    if batch_size < 1:
        raise BatchError(f"batch size must be at least 1, got {batch_size}")
    images = find_images(root)
    partial = output.with_name(output.name + ".partial")
    # The .partial journal only survives a hard kill; its rows count as done too.
    done_rows = {row["path"]: row for row in read_rows(output) + read_rows(partial)}
    todo = [p for p in images if p.relative_to(root).as_posix() not in done_rows]
    summary = {"total": len(images), "skipped": len(images) - len(todo), "scored": 0, "errors": 0,
               "seconds": 0.0, "images_per_s": 0.0, "output": str(output)}
    if not todo:
        return summary
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(done_rows.values())
        try:
            with tqdm(total=len(todo), desc="scoring", unit="img", disable=not progress) as bar:
                for i in range(0, len(todo), batch_size):
                    rows = score_batch(predictor, root, todo[i:i + batch_size])
                    writer.writerows(rows)
                    f.flush()
                    os.fsync(f.fileno())  # a crash loses at most the batch in flight
                    summary["scored"] += len(rows)
                    summary["errors"] += sum(bool(r["error"]) for r in rows)
                    bar.update(len(rows))
        finally:
            # Also on Ctrl-C or an unexpected error: every row written so far is complete, so
            # publish them; the next run resumes after them.
            f.flush()
            os.replace(partial, output)
            summary["seconds"] = round(time.perf_counter() - start, 3)
            summary["images_per_s"] = round(summary["scored"] / max(summary["seconds"], 1e-9), 2)
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write (re-runs resume it)")
    # Small batches: on a few CPU cores a batch of 32 is no faster per image than 4-8 (the
    # activations stop fitting in cache), and a crash loses less. benchmarks/deployment_modes measures it.
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        find_images(args.input)  # fail fast on a bad folder, before loading the model
        predictor = predictor_from_args(args)
        summary = score_folder(predictor, args.input, args.output, args.batch_size, progress=not args.no_progress)
    except (BatchError, BundleError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows were saved to {args.output}; re-run the same command to resume",
              file=sys.stderr)
        return 130
    if not summary["scored"]:
        print(f"nothing to do: all {summary['total']} images are already in {args.output}")
        return 0
    print(f"scored {summary['scored']} images ({summary['errors']} unreadable, {summary['skipped']} already done) "
          f"in {summary['seconds']:.1f} s: {summary['images_per_s']:.1f} images/s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
