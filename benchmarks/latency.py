"""CPU latency of every model and runtime: is FoodVision real time (< 0.03 s per image)?

    python -m benchmarks.latency            # full: 4 models x runtimes, >= 50 runs each (~6 min on 2 cores)
    python -m benchmarks.latency --quick    # CI: the deployed model, 3 runtimes, few runs

For each (model, runtime) a fresh subprocess (so peak RSS and thread settings are its own) measures:
end-to-end latency of one image (JPEG decode + transforms + forward + softmax, as `Predictor.predict`
runs it) and model-only latency, median and p90 after warm-up; batch-32 throughput; file size; peak
RSS; and, on the real test images, top-1 agreement with eager fp32, the largest probability
difference and accuracy. FoodVision Mini is the shipped checkpoint and effnet_lite2's head is
trained once on the same data; effnetb2 and vit_b_16 use random weights (their ImageNet weights
need the internet), so their speed is real but their accuracy is not reported. Writes benchmarks/results/latency.{csv,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from going_modular.course import get_course_data
from going_modular.export import onnx_paths
from going_modular.model_builder import create_model
from going_modular.predictor import Predictor
from going_modular.utils import model_size_mb, save_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINI = ROOT / "demos" / "foodvision_mini" / "effnet_lite0_foodvision_mini.pth"
CLASSES = ["pizza", "steak", "sushi"]
FULL_PLAN = {  # model -> runtimes ("eager-1t": one thread, "eager-nchw": without channels_last)
    "effnet_lite0": ["eager", "eager-1t", "eager-nchw", "compile", "onnx", "onnx-int8"],
    "effnet_lite2": ["eager", "onnx", "onnx-int8"],
    "effnetb2": ["eager", "eager-nchw", "onnx", "onnx-int8"],
    "vit_b_16": ["eager", "onnx", "onnx-int8"],
}
QUICK_PLAN = {"effnet_lite0": ["eager", "onnx", "onnx-int8"]}


def checkpoint_for(name: str) -> tuple[Path, bool]:
    """(checkpoint, trained on FoodVision data?) for a model name.

    effnet_lite2 gets its head trained once (ImageNet backbone, offline; ~1 min with feature
    caching) so its accuracy and runtime agreement are real; effnetb2 and vit_b_16 can only have
    random weights offline, so only their speed means something.
    """
    if name == "effnet_lite0":
        return MINI, True
    path = RESULTS / "checkpoints" / f"{name}.pth"
    trained = name == "effnet_lite2"
    if not path.is_file():
        if trained:
            from going_modular import course, train

            train.main(["--model", name, "--data-dir", str(course.DATA_DIR), "--out", str(path)])
        else:
            model, _ = create_model(name, num_classes=len(CLASSES), weights=None)
            save_model(model, path.parent, path.name, CLASSES, arch=name)
    return path, trained


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(median, p90) in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return round(statistics.median(ms), 2), round(ms[int(0.9 * (len(ms) - 1))], 2)


def timed(fn, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(name: str, runtime: str, runs: int, n_images: int, batches: int) -> dict:
    """One (model, runtime) measurement; runs in its own process."""
    checkpoint, trained = checkpoint_for(name)
    test = sorted((get_course_data() / "test").glob("*/*.jpg"))
    if name == "vit_b_16":
        n_images = min(n_images, 60)  # ~4 images/s on 2 cores: keeps the full run under 10 minutes
    test = test[:: max(1, len(test) // n_images)][:n_images]
    calibration = sorted((get_course_data() / "train").glob("*/*.jpg"))[::4]  # ~110 real images
    if runtime == "eager-1t":
        torch.set_num_threads(1)
    served = runtime if runtime.startswith("onnx") else "eager"  # the variants below modify eager
    predictor = Predictor(checkpoint, runtime=served, cache_dir=RESULTS / "onnx", calibration_images=calibration)
    if predictor.runtime != served:
        raise RuntimeError(f"{runtime} fell back to {predictor.runtime}")
    if runtime == "eager-nchw":
        predictor.model.to(memory_format=torch.contiguous_format)
    if runtime == "compile":  # inductor, C++ codegen with the system gcc; a failure is reported as a skip
        compiled = torch.compile(predictor.model)
        predictor._run = lambda batch: torch.softmax(compiled(batch), dim=1)
    fp32, int8 = onnx_paths(checkpoint, RESULTS / "onnx")
    file = {"onnx": fp32, "onnx-int8": int8}.get(predictor.runtime, checkpoint)
    with torch.inference_mode():
        x = predictor.preprocess(test[0]).unsqueeze(0)
        model_only = timed(lambda: predictor.probs(x), runs)
        images = iter(test * (runs // len(test) + 2))
        e2e = timed(lambda: predictor.predict(next(images)), runs)
        batch = torch.stack([predictor.preprocess(p) for p in (test * 32)[:32]])
        throughput = 32 * batches / sum(timed(lambda: predictor.probs(batch), batches, warmup=1))
        probs = torch.cat([predictor.probs(torch.stack([predictor.preprocess(p) for p in test[i:i + 32]]))
                           for i in range(0, len(test), 32)]).numpy()
    labels = np.array([CLASSES.index(p.parent.name) for p in test])
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(RESULTS / f"probs-{name}-{runtime}.npy", probs)
    return {"model": name, "runtime": runtime, "trained": trained,
            "e2e_ms_median": percentiles(e2e)[0], "e2e_ms_p90": percentiles(e2e)[1],
            "model_ms_median": percentiles(model_only)[0], "model_ms_p90": percentiles(model_only)[1],
            "batch32_img_per_s": round(throughput, 1), "file_mb": round(model_size_mb(file), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "accuracy": round(float((probs.argmax(1) == labels).mean()), 4) if trained else None,
            "n_images": len(test)}


def compare_to_eager(rows: list[dict]) -> None:
    """Top-1 agreement and largest probability difference of each runtime vs eager fp32."""
    for row in rows:
        ref = np.load(RESULTS / f"probs-{row['model']}-eager.npy")
        probs = np.load(RESULTS / f"probs-{row['model']}-{row['runtime']}.npy")
        row["top1_agree"] = round(float((ref.argmax(1) == probs.argmax(1)).mean()), 4)
        row["max_prob_diff"] = round(float(np.abs(ref - probs).max()), 4)


def print_table(rows: list[dict]) -> None:
    cols = ["model", "runtime", "e2e_ms_median", "e2e_ms_p90", "model_ms_median", "model_ms_p90",
            "batch32_img_per_s", "file_mb", "peak_rss_mb", "accuracy", "top1_agree", "max_prob_diff"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = ["n/a" if r.get(c) is None else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        eager = next(r for r in mine if r["runtime"] == "eager")
        best = min(mine, key=lambda r: r["e2e_ms_median"])
        print(f"{name}: fastest {best['runtime']} {best['e2e_ms_median']} ms end to end "
              f"({eager['e2e_ms_median'] / best['e2e_ms_median']:.1f}x eager; "
              f"model only {eager['model_ms_median'] / best['model_ms_median']:.1f}x)")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI mode: deployed model, 3 runtimes, few runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 50, quick 10)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "RUNTIME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    runs = args.runs or (10 if args.quick else 50)
    n_images, batches = (30, 1) if args.quick else (150, 3)
    if args.one:  # child process: one measurement as a JSON line
        print(json.dumps(measure(*args.one, runs=runs, n_images=n_images, batches=batches)))
        return []
    rows = []
    for name, runtimes in (QUICK_PLAN if args.quick else FULL_PLAN).items():
        for runtime in runtimes:
            cmd = [sys.executable, "-m", "benchmarks.latency", "--one", name, runtime, "--runs", str(runs)]
            if args.quick:
                cmd.append("--quick")
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0:
                print(f"[skip] {name}/{runtime} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[done] {name}/{runtime}: {rows[-1]['e2e_ms_median']} ms", file=sys.stderr)
    compare_to_eager(rows)
    (RESULTS / "latency.json").write_text(json.dumps(rows, indent=2))
    import pandas as pd

    pd.DataFrame(rows).to_csv(RESULTS / "latency.csv", index=False)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
