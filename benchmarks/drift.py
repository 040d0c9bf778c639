"""Does the drift monitor stay quiet on ordinary traffic and fire on shifted traffic? Measured on
real photos with the shipped FoodVision Mini bundle.

    python -m benchmarks.drift            # prints the table; logs + reference in benchmarks/results/drift/

The reference is the bundle's test split (the 150 course zip test photos), computed as export
records it. Every photo below is predicted once by the shipped int8 bundle and logged through
the serving path (predict_batch_with_stats -> prediction_record -> PredictionLog -> read_log);
windows of `--window` logged predictions are then drawn from those records and checked by
`monitor.drift.run_checks`, at the default alpha (no threshold was tuned on these photos).

- false alarms: windows of in-distribution traffic, drawn with replacement from the test split
  itself, and from the 150 menu_calibration photos (Food-101 test photos of pizza, steak and sushi
  that no model, threshold or reference has seen). Each window comes after a window of the same
  traffic (the latency check's baseline).
- detection: a window of calibration traffic, then a shifted stream; the delay is how many shifted
  predictions the latest window holds when the monitor first reports drift (checked after each one).
  Shifts: other dishes (Food-101 test photos of the 31 other food101_34 classes, at their original
  size; and of the 67 classes that food101_101 holds resized to 256 px), non-food photos (the real
  photos benchmarks/open_set.py uses), the calibration photos darkened (x0.5 brightness) and
  rotated (90 and 180 degrees), re-encoded as JPEG.
Serving-wing only: ONNX Runtime, NumPy, Pillow; no torch.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import sys
from pathlib import Path

from PIL import Image, ImageEnhance

from benchmarks.open_set import MINI, MIRROR_ENV, RESULTS, in_menu_photos, non_food_photos
from benchmarks.tables import markdown_table
from going_modular.deploy import cli
from going_modular.deploy.image import IMAGE_SUFFIXES
from going_modular.deploy.monitor.drift import DEFAULT_ALPHA, run_checks
from going_modular.deploy.monitor.log import PredictionLog, prediction_record, read_log
from going_modular.deploy.monitor.reference import reference_document
from going_modular.deploy.monitor.stats import predict_batch_with_stats
from going_modular.deploy.predictor import OnnxPredictor

ROOT = Path(__file__).resolve().parents[1]


def calibration_photos(mirror: Path) -> tuple[list[Path], list[str]]:
    root = mirror / "menu_calibration"
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return paths, [p.parent.name for p in paths]


def other_dishes(mirror: Path, known: list[str]) -> tuple[list[Path], list[Path]]:
    """Food-101 test photos of dishes Mini does not know: (original size (food101_34), resized (the other 67))."""
    root = mirror / "food101_101" / "food-101"
    listing = json.loads((root / "meta" / "test.json").read_text())
    original = set(json.loads((mirror / "food101_34" / "food-101" / "meta" / "test.json").read_text()))
    paths = {name: [root / "images" / f"{item}.jpg" for item in items] for name, items in sorted(listing.items())
             if name not in known}
    return ([p for n, ps in paths.items() if n in original for p in ps],
            [p for n, ps in paths.items() if n not in original for p in ps])


def edited(paths: list[Path], edit) -> list[bytes]:
    """The photos changed by `edit` (a PIL image -> PIL image), re-encoded as a client would send them."""
    out = []
    for path in paths:
        buffer = io.BytesIO()
        edit(Image.open(path).convert("RGB")).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def logged(predictor: OnnxPredictor, images: list, names: list[str], log_path: Path, mode: str) -> list[dict]:
    """Predict `images`, log every prediction through PredictionLog, and read the log back."""
    log_path.unlink(missing_ok=True)
    with PredictionLog(log_path) as log:
        for i in range(0, len(images), 16):
            for (result, stats), name in zip(predict_batch_with_stats(predictor, images[i:i + 16]),
                                             names[i:i + 16], strict=True):
                log.write(prediction_record(predictor, result, stats, mode=mode, id=name))
    assert log.status()["written"] == len(images), log.status()
    return read_log(log_path).records


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def draw(pool: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n records of a pool: without replacement when it has enough, else with."""
    return rng.sample(pool, n) if len(pool) >= n else rng.choices(pool, k=n)


def false_alarms(pool: list[dict], reference: dict, window: int, windows: int, rng: random.Random) -> dict:
    alarms, by_check = 0, {}
    for _ in range(windows):
        checks, _ = run_checks(rng.choices(pool, k=window) + rng.choices(pool, k=window), reference, window)
        fired = [c.name for c in checks if c.drifted]
        alarms += bool(fired)
        for name in fired:
            by_check[name] = by_check.get(name, 0) + 1
    return {"windows": windows, "false_alarm_rate": alarms / windows, "by_check": by_check}


def detection(before: list[dict], shifted: list[dict], reference: dict, window: int, runs: int,
              rng: random.Random) -> dict:
    delays, first_checks, early = [], {}, 0
    for _ in range(runs):
        history = draw(before, window, rng) + draw(before, window, rng)
        stream = draw(shifted, window, rng)
        if any(c.drifted for c in run_checks(history, reference, window)[0]):
            early += 1  # a false alarm before the shift: not counted as a detection
            continue
        for k in range(1, window + 1):
            checks, _ = run_checks(history + stream[:k], reference, window)
            fired = [c.name for c in checks if c.drifted]
            if fired:
                delays.append(k)
                for name in fired:
                    first_checks[name] = first_checks.get(name, 0) + 1
                break
    clean = runs - early
    delays.sort()
    return {"runs": runs, "alarm_before_shift": early, "detected": len(delays),
            "detection_rate": len(delays) / clean if clean else None,
            "median_delay": delays[len(delays) // 2] if delays else None, "max_delay": delays[-1] if delays else None,
            "first_checks": dict(sorted(first_checks.items(), key=lambda kv: -kv[1]))}


def accuracy(records: list[dict], labels: list[str]) -> float | None:
    return sum(r["label"] == y for r, y in zip(records, labels, strict=True)) / len(records) if labels else None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirror", type=Path, default=os.environ.get(MIRROR_ENV, ROOT.parent / "shared" / "data"),
                   help=f"the data mirror (env {MIRROR_ENV})")
    p.add_argument("--out", type=Path, default=RESULTS / "drift", help="where the logs, reference and table go")
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--windows", type=int, default=500, help="in-distribution windows per pool")
    p.add_argument("--runs", type=int, default=50, help="shifted streams per shift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer photos, windows and runs (a smoke test)")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if not (args.mirror / "food101_101").is_dir() or not (args.mirror / "menu_calibration").is_dir():
        raise FileNotFoundError(f"no food101_101 / menu_calibration under {args.mirror}: pass --mirror or set "
                                f"{MIRROR_ENV}")
    if args.quick:
        args.windows, args.runs = 40, 5
    rng = random.Random(args.seed)
    predictor = OnnxPredictor(MINI)
    args.out.mkdir(parents=True, exist_ok=True)
    test, test_labels = in_menu_photos(args.mirror)
    reference = reference_document(predictor, test, f"course zip test split ({len(test)} photos)")
    (args.out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    calibration, calibration_labels = calibration_photos(args.mirror)
    original, resized = other_dishes(args.mirror, predictor.class_names)
    if args.quick:
        original, resized = rng.sample(original, 60), rng.sample(resized, 60)
    non_food = non_food_photos()
    sets = {"test split": (test, [f"test/{i}" for i in range(len(test))], test_labels),
            "menu_calibration": (calibration, [str(p) for p in calibration], calibration_labels),
            "other dishes (31, original size)": (original, [str(p) for p in original], []),
            "other dishes (67, resized 256 px)": (resized, [str(p) for p in resized], []),
            "non-food photos": (list(non_food.values()), list(non_food), []),
            "darkened x0.5": (edited(calibration, lambda im: ImageEnhance.Brightness(im).enhance(0.5)),
                              [f"dark/{p}" for p in calibration], calibration_labels),
            "rotated 90°": (edited(calibration, lambda im: im.transpose(Image.Transpose.ROTATE_90)),
                            [f"rot90/{p}" for p in calibration], calibration_labels),
            "rotated 180°": (edited(calibration, lambda im: im.transpose(Image.Transpose.ROTATE_180)),
                             [f"rot180/{p}" for p in calibration], calibration_labels)}
    records = {name: logged(predictor, images, ids, args.out / f"traffic_{slug(name)}.jsonl", name)
               for name, (images, ids, _) in sets.items()}
    rows = []
    for name in ("test split", "menu_calibration"):
        fa = false_alarms(records[name], reference, args.window, args.windows, rng)
        rows.append({"traffic": f"{name} (in distribution)", "photos": len(records[name]),
                     "accuracy": accuracy(records[name], sets[name][2]), "windows / runs": fa["windows"],
                     "alarm rate": fa["false_alarm_rate"], "checks that fired": fa["by_check"]})
    for name in list(sets)[2:]:
        d = detection(records["menu_calibration"], records[name], reference, args.window, args.runs, rng)
        rows.append({"traffic": name, "photos": len(records[name]), "accuracy": accuracy(records[name], sets[name][2]),
                     "windows / runs": d["runs"], "alarm rate": d["detection_rate"],
                     "median delay": d["median_delay"], "max delay": d["max_delay"],
                     "alarm before shift": d["alarm_before_shift"], "checks that fired": d["first_checks"]})
    # One ready-made log per shift for the monitor's command line: calibration traffic, then the shift.
    for name in list(sets)[2:]:
        path = args.out / f"shift_{slug(name)}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in draw(records["menu_calibration"], args.window, rng)
                                + draw(records[name], args.window, rng)))
    (args.out / "drift.json").write_text(json.dumps({"window": args.window, "alpha": DEFAULT_ALPHA, "rows": rows},
                                                    indent=1))
    table_rows = [{**r, "accuracy": None if r["accuracy"] is None else f"{r['accuracy']:.1%}",
                   "alarm rate": None if r["alarm rate"] is None else f"{r['alarm rate']:.1%}",
                   "checks that fired": ", ".join(f"{k} {v}" for k, v in r["checks that fired"].items())}
                  for r in rows]
    print(f"FoodVision Mini int8 bundle {predictor.model_id}; windows of {args.window}, alpha {DEFAULT_ALPHA}; "
          f"reference: {reference['data']}")
    print(markdown_table(table_rows, ["traffic", "photos", "accuracy", "windows / runs", "alarm rate",
                                      "median delay", "max delay", "alarm before shift", "checks that fired"]))
    print(f"logs, reference.json and drift.json in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
