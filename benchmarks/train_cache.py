"""Training a frozen-backbone feature extractor with and without feature caching.

    python -m benchmarks.train_cache           # effnet_lite0 on the real course data, 10 epochs
    python -m benchmarks.train_cache --quick   # CI: 2 batches per epoch, 2 epochs

Both runs use the same model, data, seed and optimiser in one process, so the ratio is fair.
Without caching every epoch runs the backbone over every image; with caching the backbone runs
once and each epoch trains only the head on the stored features.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from going_modular import engine
from going_modular.course import get_course_data
from going_modular.data_setup import create_dataloaders, take_batches
from going_modular.deploy import cli
from going_modular.model_builder import MODEL_NAMES, create_model
from going_modular.utils import set_seeds


def run(name: str, cache: bool, epochs: int, max_batches: int | None) -> dict:
    set_seeds(42)
    model, transforms = create_model(name, num_classes=3)
    data = get_course_data()
    train_dl, test_dl, _ = create_dataloaders(data / "train", data / "test", transforms, batch_size=32)
    train_dl, test_dl = take_batches(train_dl, max_batches), take_batches(test_dl, max_batches)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = time.perf_counter()
    results = engine.train(model, train_dl, test_dl, optimizer, epochs=epochs, device="cpu", cache_features=cache)
    return {"cache_features": cache, "epochs": epochs, "seconds": round(time.perf_counter() - start, 2),
            "test_acc": round(results["test_acc"][-1], 4)}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="effnet_lite0", choices=MODEL_NAMES)
    parser.add_argument("--epochs", type=int, default=10, help="the course trains 10 epochs")
    parser.add_argument("--quick", action="store_true", help="CI: 2 batches per epoch, 2 epochs")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    epochs, max_batches = (2, 2) if args.quick else (args.epochs, None)
    rows = [run(args.arch, cache, epochs, max_batches) for cache in (False, True)]
    print("| model | cache_features | epochs | seconds | test_acc |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {args.arch} | {r['cache_features']} | {r['epochs']} | {r['seconds']} | {r['test_acc']} |")
    print(f"feature caching speed-up: {rows[0]['seconds'] / rows[1]['seconds']:.1f}x over {epochs} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
