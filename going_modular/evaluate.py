"""Measure a trained checkpoint on a real test split: accuracy, per-class accuracy, number of images.

FoodVision Mini on the course test split (fetched by download_data; offline, set FOODVISION_DATA_MIRROR):
    python -m going_modular.evaluate --checkpoint demos/foodvision_mini/effnet_lite0_foodvision_mini.pth
FoodVision Big on any Food101-layout root:
    python -m going_modular.evaluate --checkpoint demos/foodvision_big/effnet_lite0_foodvision_big.pth \
        --food101-root ../shared/data/food101_mini
Images go through the same `Predictor` the demos serve, so this is the demos' accuracy. Predictions
are compared with the true labels by class name, so a 101-way head can be scored on a 23-class subset.
"""
from __future__ import annotations

import argparse
from collections import Counter

from tqdm.auto import tqdm

from going_modular import data_setup
from going_modular.deploy.bundle import BundleError
from going_modular.predictor import EagerPredictor
from going_modular.train import build_data
from going_modular.utils import CheckpointError


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint saved by going_modular (e.g. by train)")
    p.add_argument("--data", default="pizza_steak_sushi_20_percent",
                   help="course dataset name (fetched from the course URL or $FOODVISION_DATA_MIRROR) "
                        "or a folder with train/ and test/ ImageFolders")
    p.add_argument("--data-dir", default="data", help="where downloaded datasets are extracted")
    p.add_argument("--food101-root", default=None, help="evaluate on torchvision Food101's test split from this root")
    p.add_argument("--subset", type=float, default=1.0, help="fraction of each Food101 class to use (e.g. 0.2)")
    p.add_argument("--class-names", default=None, help="class-names file that must match the checkpoint's")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=data_setup.NUM_WORKERS)
    p.add_argument("--seed", type=int, default=42, help="seed of the --subset draw")
    # build_data (shared with train) reads this too; evaluation never downloads the 5 GB Food-101.
    p.set_defaults(food101_download=False)
    return p.parse_args(argv)


def evaluate(predictor: EagerPredictor, dataloader, data_class_names: list[str]) -> dict:
    """Score `predictor` on a labelled dataloader whose targets index `data_class_names`.

    Returns {"n_images", "correct", "accuracy", "per_class": {name: {"n", "correct", "accuracy"}}}.
    """
    unknown = sorted(set(data_class_names) - set(predictor.class_names))
    if unknown:
        raise data_setup.DataError(f"the test data have classes the model was not built for: {unknown}")
    correct, total = Counter(), Counter()
    for X, y in tqdm(dataloader, desc="evaluating"):
        preds = predictor.probs(X).argmax(1)
        for target, pred in zip(y.tolist(), preds.tolist()):
            name = data_class_names[target]
            total[name] += 1
            correct[name] += predictor.class_names[pred] == name
    n = sum(total.values())
    if n == 0:
        raise data_setup.DataError("the test split has no images")
    per_class = {c: {"n": total[c], "correct": correct[c], "accuracy": correct[c] / total[c]} for c in sorted(total)}
    return {"n_images": n, "correct": sum(correct.values()), "accuracy": sum(correct.values()) / n,
            "per_class": per_class}


def format_report(checkpoint: str, predictor: EagerPredictor, results: dict) -> str:
    """A plain-text table: overall accuracy, then one row per class."""
    width = max(len(c) for c in results["per_class"])
    lines = [f"checkpoint: {checkpoint} ({predictor.arch}, {len(predictor.class_names)} classes)",
             f"test images: {results['n_images']}",
             f"accuracy: {results['accuracy']:.2%} ({results['correct']}/{results['n_images']})",
             "",
             f"{'class':<{width}}  accuracy  correct/n"]
    for name, r in results["per_class"].items():
        lines.append(f"{name:<{width}}  {r['accuracy']:>8.2%}  {r['correct']}/{r['n']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = get_args(argv)
    try:
        names = data_setup.read_class_names(args.class_names) if args.class_names else None
        predictor = EagerPredictor(args.checkpoint, class_names=names)
        _, test_dl, data_class_names = build_data(args, predictor.transform)
        results = evaluate(predictor, test_dl, data_class_names)
    except (CheckpointError, BundleError, data_setup.DataError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    print(format_report(args.checkpoint, predictor, results))
    return results


if __name__ == "__main__":
    main()
