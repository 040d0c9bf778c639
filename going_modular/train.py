"""Train a FoodVision feature extractor from the command line.

Defaults reproduce the shipped FoodVision Mini model:
    python -m going_modular.train --model effnet_lite0 --epochs 10 \
        --data pizza_steak_sushi_20_percent --out models/effnet_lite0_foodvision_mini.pth
Food-101 (any Food101-layout root):
    python -m going_modular.train --model effnet_lite0 --food101-root ../shared/data/food101_mini \
        --class-names ../shared/data/food101_classes.txt --label-smoothing 0.1 --out models/big.pth
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from going_modular import data_setup, engine, model_builder, utils


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="effnet_lite0", choices=model_builder.MODEL_NAMES)
    p.add_argument("--weights", default="DEFAULT", help="'DEFAULT' (ImageNet) or 'none' (random init)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data", default="pizza_steak_sushi_20_percent",
                   help="course dataset name (fetched from the course URL or $FOODVISION_DATA_MIRROR) "
                        "or a folder with train/ and test/ ImageFolders")
    p.add_argument("--data-dir", default="data", help="where downloaded datasets are extracted")
    p.add_argument("--food101-root", default=None, help="train on torchvision Food101 from this root instead")
    p.add_argument("--food101-download", action="store_true", help="download full Food-101 (5 GB) into --food101-root")
    p.add_argument("--subset", type=float, default=1.0, help="fraction of each Food101 split (e.g. 0.2)")
    p.add_argument("--class-names", default=None, help="class-names file for the head (e.g. all 101 Food-101 names)")
    p.add_argument("--no-cache-features", dest="cache_features", action="store_false",
                   help="run the backbone every epoch instead of caching its features")
    p.add_argument("--max-batches", type=int, default=None, help="limit batches per epoch (fast mode)")
    p.add_argument("--num-workers", type=int, default=data_setup.NUM_WORKERS)
    p.add_argument("--out", default="models/effnet_lite0_foodvision_mini.pth")
    return p.parse_args(argv)


def build_data(args, transform):
    """(train_dl, test_dl, class_names) for the course zip, a folder, or Food101."""
    if args.food101_root:
        names = data_setup.read_class_names(args.class_names) if args.class_names else None
        train_data, test_data, class_names = data_setup.create_food101_datasets(
            args.food101_root, transform=transform, download=args.food101_download, class_names=names)
        if args.subset < 1:
            train_data = data_setup.split_subset(train_data, args.subset, args.seed)
            test_data = data_setup.split_subset(test_data, args.subset, args.seed)
        g = torch.Generator().manual_seed(args.seed)
        mk = lambda ds, shuffle: torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=shuffle,
                                                             num_workers=args.num_workers, generator=g)
        return mk(train_data, True), mk(test_data, False), class_names
    root = Path(args.data)
    if not (root / "train").is_dir():
        url = data_setup.COURSE_DATA_URL.replace("pizza_steak_sushi_20_percent", args.data)
        root = data_setup.download_data(url, Path(args.data_dir) / args.data)
    return data_setup.create_dataloaders(root / "train", root / "test", transform,
                                         batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed)


def main(argv=None) -> dict:
    args = get_args(argv)
    utils.set_seeds(args.seed)
    weights = None if args.weights.lower() == "none" else args.weights
    # The head size depends on the data, so read the classes first with the model's transforms.
    _, transform = model_builder.create_model(args.model, num_classes=1, weights=None)
    train_dl, test_dl, class_names = build_data(args, transform)
    model, _ = model_builder.create_model(args.model, num_classes=len(class_names), weights=weights, seed=args.seed)
    optimizer = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=args.lr)
    start = time.perf_counter()
    results = engine.train(model, train_dl, test_dl, optimizer, epochs=args.epochs,
                           label_smoothing=args.label_smoothing, cache_features=args.cache_features,
                           max_batches=args.max_batches, seed=args.seed)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    info = {"args": vars(args), "results": results, "train_seconds": round(seconds, 2),
            "pretrained": weights is not None}
    utils.save_model(model, out.parent, out.name, class_names, arch=args.model, extra={"info": info})
    metrics = {**info, "test_acc": results["test_acc"][-1], "test_loss": results["test_loss"][-1],
               "parameters": utils.count_parameters(model), "size_mb": round(utils.model_size_mb(out), 2),
               "class_names": class_names}
    out.with_suffix(".json").write_text(json.dumps(metrics, indent=2))
    print(f"[INFO] test_acc {metrics['test_acc']:.4f} | {metrics['size_mb']} MB | {seconds:.1f}s | metrics: {out.with_suffix('.json')}")
    return metrics


if __name__ == "__main__":
    main()
