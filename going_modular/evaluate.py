"""Measure a trained checkpoint on a real test split: accuracy, per-class accuracy, number of images.

FoodVision Mini on the course test split (fetched by download_data; offline, set FOODVISION_DATA_MIRROR):
    python -m going_modular.evaluate --checkpoint checkpoints/effnet_lite0_foodvision_mini.pth
FoodVision Big on any Food101-layout root:
    python -m going_modular.evaluate --checkpoint checkpoints/effnet_lite0_foodvision_big.pth \
        --food101-root ../shared/data/food101_mini
Images go through `EagerPredictor`, the eager PyTorch reference every exported bundle is checked
against. Predictions are compared with the true labels by class name, so a 101-way head can be
scored on a 23-class subset. --device picks where it runs (default: cuda when available).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from tqdm.auto import tqdm

from going_modular import data_setup
from going_modular.deploy import cli
from going_modular.eager import EagerPredictor
from going_modular.train import add_data_args, build_data
from going_modular.utils import get_device


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                   help="a checkpoint saved by going_modular (e.g. by train)")
    p.add_argument("--class-names", default=None, help="class-names file that must match the checkpoint's")
    add_data_args(p)
    return p


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
        for target, pred in zip(y.tolist(), preds.tolist(), strict=True):
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


def run_evaluation(args: argparse.Namespace) -> dict:
    """Load the checkpoint, score it on the test split `args` name, print the report; returns the results."""
    names = data_setup.read_class_names(args.class_names) if args.class_names else None
    predictor = EagerPredictor(args.checkpoint, class_names=names, device=get_device(args.device))
    _, test_dl, data_class_names = build_data(args, predictor.transform)
    results = evaluate(predictor, test_dl, data_class_names)
    print(format_report(args.checkpoint, predictor, results))
    return results


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    run_evaluation(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
