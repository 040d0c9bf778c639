"""Does the deployed model know what it doesn't know? The open-set trade-off of the shipped bundles.

    python -m benchmarks.open_set            # prints the table, writes benchmarks/results/open_set.{json,png}

Three kinds of real photos, none of them used to fit or calibrate the open-set score (export
fits it on training photos and sets Mini's threshold on ../shared/data/menu_calibration, 150 clean
pizza/steak/sushi test photos used for nothing else):
- in-menu: the 150 test photos of pizza_steak_sushi_20_percent (FoodVision Mini's classes);
- off-menu food: the test split of the other 98 Food-101 classes in ../shared/data/food101_101
  (the score saw *training* photos of these dishes, never these);
- non-food: real photos shipped in installed PyPI packages (scikit-image's `skimage.data`,
  matplotlib's and Gradio's sample images); no synthetic images.
For each threshold (as a multiple of the bundle's own), the share of each set flagged as unknown
and the in-menu accuracy. The last row is the old rule: "not sure" below 60% top probability.
FoodVision Big (all 101 classes) gets its known-class and non-food rates at its threshold: there
are no other Food-101 dishes to be off its menu.
Serving-wing only: ONNX Runtime, no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from going_modular.deploy import cli
from going_modular.deploy.predictor import OnnxPredictor

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINI = ROOT / "demos" / "foodvision_mini" / "foodvision_mini.int8.onnx"
BIG = ROOT / "demos" / "foodvision_big" / "foodvision_big.int8.onnx"
MIRROR_ENV = "FOODVISION_DATA_MIRROR"
MULTIPLES = (0.8, 0.9, 0.93, 0.95, 0.97, 1.0, 1.02, 1.05, 1.1, 1.25)
OLD_RULE = 0.6  # the demo's previous "not sure" rule: top probability below 60%
# Real photographs shipped inside PyPI packages (skimage.data: photos, micrographs, scans).
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "cell", "clock", "coffee", "coins", "grass", "gravel",
                  "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina",
                  "rocket", "text")
PACKAGE_PHOTOS = (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), ("gradio", "media_assets/images/lion.jpg"),
                  ("gradio", "media_assets/images/tower.jpg"), ("gradio", "media_assets/images/cheetah.jpg"),
                  ("gradio", "media_assets/images/bus.png"))


def non_food_photos() -> dict[str, object]:
    """{name: image} for the real non-food photos shipped in installed packages."""
    import importlib

    import skimage.data

    photos = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS}
    for package, rel in PACKAGE_PHOTOS:
        path = Path(importlib.import_module(package).__file__).parent / rel
        photos[path.name] = path
    return photos


def in_menu_photos(mirror: Path) -> tuple[list[bytes], list[str]]:
    """The 150 course test photos (bytes) and their classes, read from the course zip."""
    with zipfile.ZipFile(mirror / "pizza_steak_sushi_20_percent.zip") as z:
        names = sorted(n for n in z.namelist() if n.startswith("test/") and n.lower().endswith(".jpg"))
        return [z.read(n) for n in names], [n.split("/")[1] for n in names]


def food101_test(mirror: Path, exclude=(), only=None) -> tuple[list[Path], list[str]]:
    """Test-split photos of food101_101 (classes in `only`, minus `exclude`) and their classes."""
    root = mirror / "food101_101" / "food-101"
    listing = json.loads((root / "meta" / "test.json").read_text())
    pairs = [(root / "images" / f"{item}.jpg", name) for name in sorted(listing) for item in listing[name]
             if name not in exclude and (only is None or name in only)]
    return [p for p, _ in pairs], [n for _, n in pairs]


def score(predictor: OnnxPredictor, images, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), open-set scores (N,)) for images, in batches."""
    probs, ood = [], []
    for i in range(0, len(images), batch):
        p, o = predictor.scores([predictor.preprocess(im) for im in images[i:i + batch]])
        probs.append(p)
        ood.append(o)
    return np.concatenate(probs), np.concatenate(ood)


def rates(flags: dict[str, np.ndarray], correct: np.ndarray) -> dict:
    """Shares flagged per set, and in-menu accuracy over all photos and over those accepted."""
    accepted = ~flags["in_menu"]
    return {**{f"{k}_flagged": round(float(v.mean()), 4) for k, v in flags.items()},
            "in_menu_acc": round(float(correct.mean()), 4),
            "in_menu_acc_accepted": round(float(correct[accepted].mean()), 4) if accepted.any() else None}


def mini_table(mirror: Path, photos: dict) -> tuple[list[dict], dict]:
    predictor = OnnxPredictor(MINI)
    images, labels = in_menu_photos(mirror)
    off, _ = food101_test(mirror, exclude=predictor.class_names)
    sets = {"in_menu": images, "off_menu_food": off, "non_food": list(photos.values())}
    scored = {k: score(predictor, v) for k, v in sets.items()}
    correct = np.array([predictor.class_names[i] for i in scored["in_menu"][0].argmax(1)]) == np.array(labels)
    rows = [{"rule": f"ood_score > {m:g} x threshold", "multiple": m,
             **rates({k: o > m * predictor.ood_threshold for k, (_, o) in scored.items()}, correct)}
            for m in MULTIPLES]
    rows.append({"rule": f"old: top probability < {OLD_RULE:.0%}", "multiple": None,
                 **rates({k: p.max(1) < OLD_RULE for k, (p, _) in scored.items()}, correct)})
    counts = {k: len(v) for k, v in sets.items()}
    non_food = dict(zip(photos, (float(s) for s in scored["non_food"][1]), strict=True))
    return rows, {"counts": counts, "non_food_scores": non_food, "open_set": predictor.meta["open_set"]}


def big_row(mirror: Path, photos: dict) -> dict:
    predictor = OnnxPredictor(BIG)
    known, labels = food101_test(mirror, only=predictor.class_names)
    p, o = score(predictor, known)
    _, o_non_food = score(predictor, list(photos.values()))
    correct = np.array([predictor.class_names[i] for i in p.argmax(1)]) == np.array(labels)
    return {"model": "FoodVision Big", "classes": len(predictor.class_names), "known_images": len(known),
            **rates({"in_menu": o > predictor.ood_threshold, "non_food": o_non_food > predictor.ood_threshold},
                    correct)}


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [r for r in rows if r["multiple"] is not None]
    x = [r["multiple"] for r in swept]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label in (("in_menu_flagged", "in-menu (pizza/steak/sushi test photos)"),
                       ("off_menu_food_flagged", "off-menu food (98 other Food-101 dishes)"),
                       ("non_food_flagged", "non-food photos")):
        ax.plot(x, [100 * r[key] for r in swept], marker="o", label=label)
    ax.axvline(1.0, color="grey", linestyle="--", label="shipped threshold")
    ax.set_xlabel("threshold (multiple of the bundle's calibrated threshold)")
    ax.set_ylabel("% flagged as unknown")
    ax.set_title("FoodVision Mini: open-set trade-off (int8 bundle)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def table(rows: list[dict]) -> str:
    lines = ["| rule | in-menu flagged | off-menu food flagged | non-food flagged | in-menu acc | acc of accepted |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['in_menu_flagged']:.1%} | {r['off_menu_food_flagged']:.1%} | "
                     f"{r['non_food_flagged']:.1%} | {r['in_menu_acc']:.1%} | {r['in_menu_acc_accepted']:.1%} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirror", type=Path, default=os.environ.get(MIRROR_ENV, ROOT.parent / "shared" / "data"),
                   help=f"the data mirror (env {MIRROR_ENV})")
    p.add_argument("--out", type=Path, default=RESULTS, help="where open_set.json and open_set.png go")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if not (args.mirror / "food101_101").is_dir():
        raise FileNotFoundError(f"no food101_101 under {args.mirror}: pass --mirror or set {MIRROR_ENV}")
    photos = non_food_photos()
    rows, mini = mini_table(args.mirror, photos)
    big = big_row(args.mirror, photos)
    print(f"FoodVision Mini, int8 bundle: {mini['counts']}")
    print(table(rows))
    print(f"\nFoodVision Big ({big['classes']} classes, {big['known_images']} test photos of them): "
          f"{big['in_menu_flagged']:.1%} flagged, accuracy {big['in_menu_acc']:.1%}; "
          f"non-food flagged {big['non_food_flagged']:.1%}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "open_set.json").write_text(json.dumps({"mini": rows, "mini_info": mini, "big": big}, indent=1))
    print(f"plot: {plot(rows, args.out / 'open_set.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
