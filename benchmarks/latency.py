"""What a user would pick, side by side in one run: is the deployed FoodVision Mini real time on a CPU?

    python -m benchmarks.latency            # full run (~10 min on 2 cores)
    python -m benchmarks.latency --quick    # CI: eager vs the shipped bundle, few runs

Rows (each measured in a fresh subprocess, so its peak RSS and threads are its own):
- the course's deployed path: torchvision EfficientNet-B2, eager PyTorch (random weights offline:
  its speed is real, its accuracy is not reported);
- FoodVision Mini (EfficientNet-Lite0) eager PyTorch from the .pth: the reference;
- the same model as an fp32 bundle and as the shipped int8 bundle, served by ONNX Runtime;
- OpenVINO on the same two ONNX files (optional: skipped when openvino is not installed);
- the int8 bundle and eager with 1 and 2 threads, on a quiet machine and with a CPU hog (one busy
  process per core) running beside them: the thread default must degrade gracefully.
Columns: end-to-end latency of one photo (file bytes -> probabilities: decode, preprocess,
forward, softmax) median and p90, model-only median, cold start (new process -> first prediction),
peak RSS while serving one photo at a time, accuracy on the 150 real test photos and top-1
agreement with eager. The full run also
times the Mini demo from launch to its first HTTP 200 (and its RSS after one prediction) and
measures the install size of the Space's requirements in a fresh venv.
Writes benchmarks/results/latency.{json,csv} (--quick: latency-quick.{json,csv}).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINI_PTH = ROOT / "checkpoints" / "effnet_lite0_foodvision_mini.pth"
MINI_INT8 = ROOT / "demos" / "foodvision_mini" / "foodvision_mini.int8.onnx"
MINI_FP32 = RESULTS / "foodvision_mini.fp32.onnx"
COURSE_PTH = RESULTS / "effnetb2_random.pth"
CLASSES = ["pizza", "steak", "sushi"]
# The shared helpers (benchmarks.support: free_port, proc_status_mb) are imported where used, not at
# the top: every row's child process imports this module, and its cold start is timed.


def plan(quick: bool) -> list[dict]:
    """The rows: what runs (kind + file), with how many threads, beside a CPU hog or not."""
    def row(name, kind, file, threads=2, hog=False, trained=True):
        return {"row": name, "kind": kind, "file": str(file), "threads": threads, "hog": hog, "trained": trained}

    if quick:
        return [row("lite0 eager", "eager", MINI_PTH), row("lite0 int8 bundle", "onnx", MINI_INT8),
                row("lite0 int8 bundle", "onnx", MINI_INT8, threads=1)]
    rows = [row("course: effnetb2 eager", "eager", COURSE_PTH, trained=False),
            row("lite0 eager", "eager", MINI_PTH),
            row("lite0 fp32 bundle", "onnx", MINI_FP32),
            row("lite0 int8 bundle", "onnx", MINI_INT8)]
    try:
        import openvino  # noqa: F401
        rows += [row("openvino fp32", "openvino", MINI_FP32), row("openvino int8", "openvino", MINI_INT8)]
    except ImportError:
        print("[skip] openvino is not installed: no OpenVINO rows", file=sys.stderr)
    for hog in (False, True):  # the thread default, measured both ways
        rows += [row("lite0 eager", "eager", MINI_PTH, threads=t, hog=hog) for t in (1, 2) if hog or t == 1]
        rows += [row("lite0 int8 bundle", "onnx", MINI_INT8, threads=t, hog=hog) for t in (1, 2) if hog or t == 1]
    return rows


def prepare(rows: list[dict]) -> None:
    """The files the rows need that are not shipped: a random EfficientNet-B2, the fp32 bundle."""
    files = {r["file"] for r in rows}
    if str(COURSE_PTH) in files and not COURSE_PTH.is_file():
        from going_modular.model_builder import create_model
        from going_modular.utils import save_model

        model, _ = create_model("effnetb2", num_classes=len(CLASSES), weights=None)
        save_model(model, COURSE_PTH.parent, COURSE_PTH.name, CLASSES, arch="effnetb2")
    if str(MINI_FP32) in files and not MINI_FP32.is_file():
        from going_modular.export import export_bundle

        export_bundle(MINI_PTH, MINI_FP32, precision="fp32", log=lambda msg: print(msg, file=sys.stderr))


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


def load(kind: str, file: str, threads: int):
    """(preprocess, probs) for one row: the project's predictors, or OpenVINO on a bundle's graph."""
    if kind == "openvino":
        import openvino as ov

        from going_modular.deploy.bundle import open_session
        from going_modular.deploy.predictor import preprocess_pixels, softmax

        _, meta = open_session(file, 1)
        compiled = ov.Core().compile_model(file, "CPU", {"INFERENCE_NUM_THREADS": threads})
        return (lambda image: preprocess_pixels(image, meta["input"]),
                lambda items: softmax(compiled(np.stack(items))[0]))
    from going_modular.deploy.predictor import load_predictor

    predictor = load_predictor(file, num_threads=threads)
    return predictor.preprocess, predictor.probs


def measure(row: dict, runs: int, n_images: int) -> dict:
    """One row, in this (fresh) process: latencies, accuracy, probabilities for the agreement."""
    from benchmarks.support import proc_status_mb

    test = sorted((ROOT / "data" / "pizza_steak_sushi_20_percent" / "test").glob("*/*.jpg"))
    test = test[:: max(1, len(test) // n_images)][:n_images]
    data = [p.read_bytes() for p in test]  # bytes: decoding is part of the end-to-end time
    preprocess, probs = load(row["kind"], row["file"], row["threads"])
    one = preprocess(data[0])
    model_only = timed(lambda: probs([one]), runs)
    cycle = iter(data * (runs // len(data) + 2))
    e2e = timed(lambda: probs([preprocess(next(cycle))]), runs)
    # Peak RSS serving one photo at a time: /proc's VmHWM, not getrusage's ru_maxrss, which survives
    # fork + exec, so every child reported its parent's peak (1,909 MB for each row, measured).
    rss = proc_status_mb("self", "VmHWM")
    p = np.concatenate([probs([preprocess(d) for d in data[i:i + 32]]) for i in range(0, len(data), 32)])
    labels = np.array([CLASSES.index(path.parent.name) for path in test])
    np.save(RESULTS / f"probs-{row['kind']}-{Path(row['file']).stem}.npy", p)
    return {"e2e_ms_median": percentiles(e2e)[0], "e2e_ms_p90": percentiles(e2e)[1],
            "model_ms_median": percentiles(model_only)[0],
            "accuracy": round(float((p.argmax(1) == labels).mean()), 4) if row["trained"] else None,
            "n_images": len(test), "peak_rss_mb": round(rss)}


COLD = ("import sys, time; t = time.perf_counter()\n"
        "from benchmarks.latency import load\n"
        "pre, probs = load(sys.argv[1], sys.argv[2], int(sys.argv[3]))\n"
        "probs([pre(sys.argv[4])])\n")


def cold_start(row: dict, image: Path) -> float:
    """Seconds from a new Python process to its first prediction (imports, load, one forward)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", COLD, row["kind"], row["file"], str(row["threads"]), str(image)],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return round(time.perf_counter() - start, 2)


def start_hog() -> list[subprocess.Popen]:
    """One busy process per core: the 'busy machine' condition."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]


def run_row(row: dict, runs: int, n_images: int, image: Path) -> dict:
    hog = start_hog() if row["hog"] else []
    try:
        cmd = [sys.executable, "-m", "benchmarks.latency", "--one", json.dumps(row), "--runs", str(runs),
               "--images", str(n_images)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
        result = {**row, **json.loads(proc.stdout.strip().splitlines()[-1])}
        result["cold_start_s"] = cold_start(row, image)
        return result
    finally:
        for p in hog:
            p.kill()
            p.wait()


def agreement(rows: list[dict]) -> None:
    """Top-1 agreement of each trained row with eager Lite0 on the same test photos."""
    ref = RESULTS / f"probs-eager-{MINI_PTH.stem}.npy"
    for row in rows:
        mine = RESULTS / f"probs-{row['kind']}-{Path(row['file']).stem}.npy"
        if row["trained"] and ref.is_file() and mine.is_file():
            row["top1_agree"] = round(float((np.load(ref).argmax(1) == np.load(mine).argmax(1)).mean()), 4)


def demo_cold_start() -> dict:
    """The Mini demo: launch -> first HTTP 200 of its page, then RSS after one prediction."""
    import httpx
    from gradio_client import Client, handle_file

    from benchmarks.support import free_port, proc_status_mb

    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "demos/foodvision_mini/app.py", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
            if proc.poll() is not None or time.perf_counter() - start > 120:
                raise RuntimeError("the demo did not start")
        seconds = time.perf_counter() - start
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(ROOT / "demos/foodvision_mini/examples/pizza.jpg")), api_name="/predict")
        rss = proc_status_mb(proc.pid, "VmRSS")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"demo_cold_start_s": round(seconds, 2), "demo_rss_mb": round(rss)}


def space_install_mb() -> float:
    """Size of a fresh venv holding only the Space's requirements.txt (what Spaces installs)."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r",
                        str(ROOT / "demos" / "foodvision_mini" / "requirements.txt")], check=True)
        total = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / 2**20)


COLUMNS = ["row", "threads", "hog", "e2e_ms_median", "e2e_ms_p90", "model_ms_median", "cold_start_s",
           "peak_rss_mb", "accuracy", "top1_agree"]


def print_table(rows: list[dict]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join("n/a" if r.get(c) is None else str(r[c]) for c in COLUMNS) + " |")
    course = next((r for r in rows if r["row"].startswith("course") and not r["hog"]), None)
    best = next(r for r in rows if r["row"] == "lite0 int8 bundle" and not r["hog"])
    eager = next(r for r in rows if r["row"] == "lite0 eager" and not r["hog"] and r["threads"] == best["threads"])
    print(f"shipped int8 bundle: {best['e2e_ms_median']} ms end to end, "
          f"{eager['e2e_ms_median'] / best['e2e_ms_median']:.1f}x eager Lite0" +
          (f", {course['e2e_ms_median'] / best['e2e_ms_median']:.1f}x the course's EfficientNet-B2 path"
           if course else ""))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI mode: eager vs the shipped bundle, few runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 100, quick 10)")
    parser.add_argument("--images", type=int, default=None, help="test photos for accuracy (default 150, quick 30)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one row (JSON) -> one JSON line
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    runs = args.runs or (10 if args.quick else 100)
    n_images = args.images or (30 if args.quick else 150)
    if args.one:
        print(json.dumps(measure(json.loads(args.one), runs, n_images)))
        return 0
    from going_modular.course import get_course_data

    RESULTS.mkdir(parents=True, exist_ok=True)
    image = sorted((get_course_data() / "test" / "pizza").glob("*.jpg"))[0]
    rows = plan(args.quick)
    prepare(rows)
    done = []
    for row in rows:
        try:
            done.append(run_row(row, runs, n_images, image))
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"[skip] {row['row']} ({row['threads']} threads): {e}", file=sys.stderr)
            continue
        print(f"[done] {row['row']} threads={row['threads']} hog={row['hog']}: {done[-1]['e2e_ms_median']} ms",
              file=sys.stderr)
    agreement(done)
    extra = {} if args.quick else {**demo_cold_start(), "space_install_mb": space_install_mb()}
    name = "latency-quick" if args.quick else "latency"  # CI's quick run never replaces a full run's results
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": done, **extra}, indent=2))
    import pandas as pd

    pd.DataFrame(done).to_csv(RESULTS / f"{name}.csv", index=False)
    print_table(done)
    for key, value in extra.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    from going_modular.deploy import cli  # here, not at the top: the timed child processes import this module

    sys.exit(cli.run(main))
