"""Train a FoodVision feature extractor from the command line.

Defaults reproduce the shipped FoodVision Mini model:
    python -m going_modular.train --arch effnet_lite0 --epochs 10 \\
        --data pizza_steak_sushi_20_percent --out models/effnet_lite0_foodvision_mini.pth
FoodVision Big as shipped (any Food101-layout root; all 101 dishes, unbalanced, features kept on disk):
    python -m going_modular.train --arch effnet_lite0 --food101-root ../shared/data/food101_101 \\
        --class-names demos/foodvision_big/class_names.txt --balance --feature-cache models/features \\
        --out checkpoints/effnet_lite0_foodvision_big.pth
The course's script mode works too: `python going_modular/train.py ...`.
The checkpoint is a plain state_dict; its metadata and metrics go to the .json beside it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python going_modular/train.py`: make the package importable, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from going_modular import data_setup, engine, model_builder, utils
from going_modular.deploy import cli


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Where the images come from: shared by train and evaluate."""
    p.add_argument("--data", default="pizza_steak_sushi_20_percent",
                   help="course dataset name (fetched from the course URL or $FOODVISION_DATA_MIRROR) "
                        "or a folder with train/ and test/ ImageFolders")
    p.add_argument("--data-dir", default="data", help="where downloaded datasets are extracted")
    p.add_argument("--food101-root", default=None, help="use torchvision Food101 from this root instead")
    p.add_argument("--subset", type=float, default=1.0, help="fraction of each Food101 class to use (e.g. 0.2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=data_setup.NUM_WORKERS)
    p.add_argument("--seed", type=int, default=42, help="seed of the shuffling, the --subset draw and the head")
    p.add_argument("--max-batches", type=int, default=None,
                   help="use only this many batches of data per split (fast mode)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    # build_data reads this; only train offers the 5 GB download
    p.set_defaults(food101_download=False)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="effnet_lite0", choices=model_builder.MODEL_NAMES)
    p.add_argument("--weights", default="DEFAULT", help="'DEFAULT' (ImageNet) or 'none' (random init)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--balance", action="store_true",
                   help="weight the loss by inverse class frequency (for unbalanced data such as food101_101)")
    p.add_argument("--views", nargs="+", default=["center"], choices=data_setup.VIEWS,
                   help="fixed views of each training photo whose cached features train the head "
                        "(center = the eval transform; flip, zoom: light augmentation; needs feature caching)")
    add_data_args(p)
    p.add_argument("--food101-download", action="store_true",
                   help="download full Food-101 (5 GB) into --food101-root")
    p.add_argument("--class-names", default=None, help="class-names file for the head (e.g. all 101 Food-101 names)")
    p.add_argument("--no-cache-features", dest="cache_features", action="store_false",
                   help="run the backbone every epoch instead of caching its features")
    p.add_argument("--feature-cache", default=None,
                   help="folder that keeps the backbone's features between runs (e.g. models/features): "
                        "another recipe on the same photos skips the backbone")
    p.add_argument("--out", default="models/effnet_lite0_foodvision_mini.pth")
    return p


def food101_loader(dataset, batch_size: int, shuffle: bool, num_workers: int = data_setup.NUM_WORKERS,
                   seed: int = 42) -> torch.utils.data.DataLoader:
    """A DataLoader over (a subset of) Food101, seeded like create_dataloaders' (train CLI and notebook 08)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                       generator=torch.Generator().manual_seed(seed))


def build_data(args, transform):
    """(train_dl, test_dl, class_names) for the course zip, a folder, or Food101."""
    if args.food101_root:
        names = data_setup.read_class_names(args.class_names) if args.class_names else None
        train_data, test_data, class_names = data_setup.create_food101_datasets(
            args.food101_root, transform=transform, download=args.food101_download, class_names=names)
        if args.subset < 1:
            train_data = data_setup.split_subset(train_data, args.subset, args.seed)
            test_data = data_setup.split_subset(test_data, args.subset, args.seed)
        train_dl, test_dl = (food101_loader(ds, args.batch_size, shuffle, args.num_workers, args.seed)
                             for ds, shuffle in ((train_data, True), (test_data, False)))
    else:
        root = data_setup.course_dataset(args.data, args.data_dir)
        train_dl, test_dl, class_names = data_setup.create_dataloaders(
            root / "train", root / "test", transform, batch_size=args.batch_size, num_workers=args.num_workers,
            seed=args.seed)
    return (data_setup.take_batches(train_dl, args.max_batches, args.seed),
            data_setup.take_batches(test_dl, args.max_batches, args.seed), class_names)


def train(args: argparse.Namespace) -> dict:
    """Train as `args` say, save the checkpoint (+ .json metadata); returns the metadata's info dict."""
    utils.set_seeds(args.seed)
    device = utils.get_device(args.device)
    weights = None if args.weights.lower() == "none" else args.weights
    # The head size depends on the data, so read the classes first with the model's transforms.
    _, transform = model_builder.create_model(args.arch, num_classes=1, weights=None)
    train_dl, test_dl, class_names = build_data(args, transform)
    model, _ = model_builder.create_model(args.arch, num_classes=len(class_names), weights=weights, seed=args.seed)
    optimizer = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=args.lr)
    if args.views[0] != "center" or len(set(args.views)) != len(args.views):
        raise ValueError(f"--views must start with center and name each view once, got {args.views}")
    extra = [build_data(args, data_setup.view_transform(transform, view))[0] for view in args.views[1:]]
    loss_fn = None
    if args.balance:
        targets = torch.tensor(data_setup.dataset_targets(train_dl.dataset))
        loss_fn = torch.nn.CrossEntropyLoss(weight=engine.balanced_class_weights(targets, len(class_names)).to(device))
    start = time.perf_counter()
    results = engine.train(model, train_dl, test_dl, optimizer, loss_fn=loss_fn, epochs=args.epochs, device=device,
                           label_smoothing=args.label_smoothing, cache_features=args.cache_features, seed=args.seed,
                           extra_train_dataloaders=extra, feature_cache=args.feature_cache)
    seconds = time.perf_counter() - start
    info = {"args": vars(args), "device": str(device), "results": results, "train_seconds": round(seconds, 2),
            "pretrained": weights is not None, "test_acc": results["test_acc"][-1],
            "test_loss": results["test_loss"][-1], "parameters": utils.count_parameters(model)}
    out = Path(args.out)
    utils.save_model(model, out.parent, out.name, class_names, arch=args.arch, info=info)
    print(f"[INFO] test_acc {info['test_acc']:.4f} | {utils.model_size_mb(out):.1f} MB | {seconds:.1f}s on "
          f"{device} | metadata: {utils.sidecar_path(out)}")
    return info


def main(argv=None) -> int:
    train(get_args_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
