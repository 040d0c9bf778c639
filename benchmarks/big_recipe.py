"""Which recipe for FoodVision Big (all 101 Food-101 dishes, 4,806 unbalanced training photos)?

    python -m benchmarks.big_recipe                          # Lite0 recipes, then one bundle per arch
    python -m benchmarks.big_recipe --archs effnet_lite0     # one arch

Every recipe is a run of the project's own CLI (`going_modular.train`) on food101_101, with
`--feature-cache models/features`: a frozen backbone's features of each (arch, view, split) are
computed once and every later recipe (and the shipped training run) reads them back, so a recipe
costs seconds. A view is a fixed transform of each training photo (`data_setup.view_transform`):
center (the eval transform), flip (mirrored), zoom (a tighter crop); extra views are light
augmentation at no per-epoch cost. Recipes vary label smoothing (0 vs the course's 0.1), class
balancing (`--balance`: the loss weighted by inverse class frequency; 34 classes have ~60
training photos, 67 have 40), views and epochs.
top-1 / top-5: the trained checkpoint (eager, fp32) on the 1,390 test photos.
For each arch's best recipe an int8 bundle is built with export's own steps (graph, static int8
calibrated on 100 training photos, the open-set distance bank) and measured with the project's
predictor (`OnnxPredictor`): its own top-1 / top-5 on the test photos, the end-to-end latency of
one photo (JPEG bytes -> probabilities, median of --runs, after 5 warm-ups) and its size.
--quick (CI) runs two short recipes on food101_mini. Writes benchmarks/results/big_recipe.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch

from benchmarks.latency import percentiles, timed
from benchmarks.tables import markdown_table
from going_modular import data_setup, engine, export, train, utils
from going_modular import open_set as open_set_model
from going_modular.deploy import cli
from going_modular.deploy.bundle import BUNDLE_FORMAT
from going_modular.deploy.files import sha256sum
from going_modular.deploy.predictor import OnnxPredictor

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "models" / "big_recipe"
FEATURES = ROOT / "models" / "features"
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_ROOT = Path(os.environ.get(data_setup.MIRROR_ENV, ROOT.parent / "shared" / "data")) / "food101_101"
# (label smoothing, balance, training views, epochs)
RECIPES = ((0.0, False, ("center",), 10),
           (0.1, False, ("center",), 10),
           (0.0, True, ("center",), 10),
           (0.1, True, ("center",), 10),
           (0.1, True, ("center",), 20),
           (0.1, True, ("center", "flip"), 10),
           (0.1, True, ("center", "flip", "zoom"), 10))


def recipe_args(arch: str, root: Path, smoothing: float, balance: bool, views, epochs: int, out: Path,
                data=()) -> list[str]:
    """The `going_modular.train` command line of one recipe (`data`: extra data flags, e.g. --subset)."""
    return (["--arch", arch, "--food101-root", str(root), "--class-names", str(root / "food-101/meta/classes.txt"),
             "--label-smoothing", str(smoothing), "--epochs", str(epochs), "--views", *views, *data,
             "--feature-cache", str(FEATURES), "--out", str(out)] + (["--balance"] if balance else []))


def topk(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    top5 = logits.topk(5, dim=1).indices
    return {"top1": round(float((top5[:, 0] == labels).float().mean()), 4),
            "top5": round(float((top5 == labels[:, None]).any(1).float().mean()), 4)}


def run_recipe(argv: list[str]) -> tuple[dict, dict]:
    """Train one recipe with the CLI; (its top-1 / top-5 on the test split, its checkpoint's info)."""
    args = train.get_args_parser().parse_args(argv)
    info = train.train(args)
    model, transform, _ = utils.load_model(args.out)
    _, test_dl, _ = train.build_data(args, transform)
    test = engine.cached_features(model, test_dl, FEATURES)  # computed by the training run: read back
    with torch.inference_mode():
        logits = model.classifier(test.tensors[0])
    return topk(logits, test.tensors[1]), info


def build_bundle(checkpoint: Path, root: Path, out: Path, timing_only: bool = False, data=()) -> Path:
    """An int8 bundle of `checkpoint`, built with export's own steps (the open-set distance bank
    from the cached training features; no reject head: Big has no other dishes). timing_only: the
    bank holds seeded random vectors of the same shape (its contents do not change the speed)."""
    model, transform, ckpt = utils.load_model(checkpoint)
    if timing_only:
        num_classes = len(ckpt["class_names"])
        features = torch.randn(num_classes * 40, model.classifier[-1].in_features,
                               generator=torch.Generator().manual_seed(0))
        labels = torch.arange(num_classes).repeat(40)
    else:
        args = train.get_args_parser().parse_args(["--food101-root", str(root), *data])
        train_dl, _, _ = train.build_data(args, transform)
        features, labels = engine.cached_features(model, train_dl, FEATURES).tensors
    spec = export.input_spec(transform)
    open_set, info = open_set_model.fit_open_set(features, labels, features[:0], labels[:0])
    photos = [p for p, _ in data_setup.labelled_images({"food101_root": str(root)}, "train")]
    fp32 = out.with_suffix(".fp32.tmp")
    export.export_onnx(model, fp32, spec, open_set=open_set)
    export.quantize_int8(fp32, out, random.Random(42).sample(photos, 100), spec)
    fp32.unlink()
    export.write_metadata(out, {"format": BUNDLE_FORMAT, "arch": ckpt["arch"], "class_names": ckpt["class_names"],
                                "precision": "int8", "input": spec, "open_set": info,
                                "source": {"checkpoint": checkpoint.name, "sha256": sha256sum(checkpoint)}})
    return out


def bundle_accuracy(path: Path, root: Path, limit: int | None = None) -> dict:
    """The bundle's own top-1 / top-5 on the test split (about `limit` photos of it, evenly spread;
    None: all), kept in the bundle's metadata so a re-run reads them back; and its size (MB, 10^6 bytes)."""
    predictor = OnnxPredictor(path)
    size = {"bundle_mb": round(path.stat().st_size / 1e6, 2)}
    if "metrics" in predictor.meta:
        return {**predictor.meta["metrics"], **size}
    test = data_setup.labelled_images({"food101_root": str(root)}, "test")
    test = test[::max(1, len(test) // limit)] if limit else test
    labels = torch.tensor([predictor.class_names.index(n) for _, n in test])
    probs = [torch.from_numpy(predictor.probs([predictor.preprocess(p) for p, _ in test[i:i + 32]]))
             for i in range(0, len(test), 32)]
    acc = topk(torch.cat(probs), labels)
    metrics = {"bundle_top1": acc["top1"], "bundle_top5": acc["top5"]}
    export.write_metadata(path, {**predictor.meta, "metrics": metrics})
    return {**metrics, **size}


def time_in_alternation(bundles: list[Path], root: Path, runs: int) -> list[float]:
    """Median e2e ms of one photo (JPEG bytes -> probabilities, 50 test photos in turn) per bundle,
    the bundles timed one after the other in each round, so a shared machine's load falls on all alike."""
    predictors = [OnnxPredictor(b) for b in bundles]
    test = data_setup.labelled_images({"food101_root": str(root)}, "test")
    data = [p.read_bytes() for p, _ in test[::max(1, len(test) // 50)]]
    seconds = [[] for _ in predictors]
    for i in range(runs + 5):
        for predictor, times in zip(predictors, seconds, strict=True):
            photo = data[i % len(data)]
            times.append(timed(lambda p=predictor, photo=photo: p.probs([p.preprocess(photo)]), 1, warmup=0)[0])
    return [percentiles(times[5:])[0] for times in seconds]


def recipe_name(smoothing: float, balance: bool, views, epochs: int) -> str:
    return f"ls{smoothing:g}{'-balanced' if balance else ''}-{'+'.join(views)}-{epochs}ep"


def untrained_checkpoint(arch: str, num_classes: int) -> Path:
    """A checkpoint of `arch` with an untrained head: its bundle's speed and size are real (timing only)."""
    from going_modular.model_builder import create_model

    model, _ = create_model(arch, num_classes=num_classes)
    out = WORK / f"{arch}-untrained.pth"
    utils.save_model(model, out.parent, out.name, [str(i) for i in range(num_classes)], arch=arch)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--food101-root", type=Path, default=DEFAULT_ROOT, help="a Food101-layout root (all 101 classes)")
    p.add_argument("--archs", nargs="+", default=["effnet_lite0"], choices=["effnet_lite0", "effnet_lite2"],
                   help="archs whose recipes are trained (each needs its backbone's features once)")
    p.add_argument("--speed-archs", nargs="*", default=["effnet_lite2"], choices=["effnet_lite0", "effnet_lite2"],
                   help="archs whose int8 bundle is only timed and sized (untrained head: no accuracy)")
    p.add_argument("--views", nargs="+", default=["center", "flip"], choices=data_setup.VIEWS,
                   help="recipes using other views are skipped (each view costs one backbone pass per photo)")
    p.add_argument("--runs", type=int, default=100, help="timed single-photo predictions per bundle")
    p.add_argument("--quick", action="store_true",
                   help="CI: food101_mini's 10%%, two 2-epoch recipes, Lite0 only, 10 timed runs on 50 photos")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    recipes, data, limit = RECIPES, (), None
    if args.quick:
        args.food101_root, args.archs, args.speed_archs, args.runs = DEFAULT_ROOT.with_name("food101_mini"), \
            ["effnet_lite0"], [], 10
        recipes, data, limit = [(s, b, v, 2) for s, b, v, _ in RECIPES[2:4]], ("--subset", "0.1"), 50
    root = args.food101_root
    if not (root / "food-101" / "meta" / "classes.txt").is_file():
        raise data_setup.DataError(f"no Food-101 root at {root} (expected {root}/food-101/meta/classes.txt)")
    WORK.mkdir(parents=True, exist_ok=True)
    rows, timed_rows = [], []
    for arch in args.archs:
        best = None
        for smoothing, balance, views, epochs in recipes:
            if not set(views) <= set(args.views):
                continue
            out = WORK / f"{arch}-{recipe_name(smoothing, balance, views, epochs)}.pth"
            acc, info = run_recipe(recipe_args(arch, root, smoothing, balance, views, epochs, out, data))
            row = {"arch": arch, "label_smoothing": smoothing, "balance": balance, "views": "+".join(views),
                   "epochs": epochs, **acc, "train_s": info["train_seconds"]}
            print(row, flush=True)
            rows.append(row)
            if best is None or acc["top1"] > best[1]["top1"]:
                best = (out, row)
        out, row = best
        bundle = out.with_suffix(".int8.onnx")
        if not bundle.is_file() or OnnxPredictor(bundle).meta.get("source", {}).get("sha256") != sha256sum(out):
            build_bundle(out, root, bundle, data=data)  # else: the same checkpoint's bundle, from an earlier run
        row.update(bundle_accuracy(bundle, root, limit))
        timed_rows.append((row, bundle))
    for arch in args.speed_archs:
        checkpoint = WORK / f"{arch}-untrained.pth"
        bundle = checkpoint.with_suffix(".int8.onnx")
        if not bundle.is_file():
            build_bundle(untrained_checkpoint(arch, 101), root, bundle, timing_only=True)
        row = {"arch": arch, "views": "(untrained head: speed and size only)",
               "bundle_mb": round(bundle.stat().st_size / 1e6, 2)}
        rows.append(row)
        timed_rows.append((row, bundle))
    # The shipped Mini bundle (5.2 ms on a quiet machine, README) timed in the same rounds: on a shared
    # machine, read the rows above against it.
    mini = ROOT / "demos" / "foodvision_mini" / "foodvision_mini.int8.onnx"
    row = {"arch": "effnet_lite0", "views": "(reference: the shipped FoodVision Mini bundle)",
           "bundle_mb": round(mini.stat().st_size / 1e6, 2)}
    rows.append(row)
    timed_rows.append((row, mini))
    for (row, _), ms in zip(timed_rows, time_in_alternation([b for _, b in timed_rows], root, args.runs),
                            strict=True):
        row["e2e_ms"] = ms
    columns = ["arch", "label_smoothing", "balance", "views", "epochs", "top1", "top5", "bundle_top1",
               "bundle_top5", "e2e_ms", "bundle_mb", "train_s"]
    print(markdown_table(rows, columns, digits=4))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"big_recipe{'-quick' if args.quick else ''}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
