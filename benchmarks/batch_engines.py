"""Batch scoring engines side by side: the local engine vs Ray Data with 1 and 2 actors.

    python -m benchmarks.batch_engines            # all 600 real course images (train + test)
    python -m benchmarks.batch_engines --quick    # the 150 test images

Measures, with the shipped int8 bundle on real photos (every job a fresh output CSV, so each
scores every image):
- images/s of the local engine (ONNX Runtime's default threads, and 1 thread: the per-core figure);
- images/s of the Ray engine with 1 and 2 actors (a job includes its actor start-up, as a user sees
  it; "after start-up" counts from the first batch of rows reaching the driver to the last: what
  a long job tends to);
- Ray's start-up overhead: `ray.init` of a local Ray, and a job of 8 images (actor start + model load);
- a worked estimate of the cluster that scores 10 million images in one hour, from the per-core figure.
Timings depend on the machine and on whatever else runs on it; compare ratios within one run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.options import add_data_args
from benchmarks.support import course_photo_folder
from benchmarks.tables import markdown_table
from going_modular.deploy import cli
from going_modular.deploy.batch.job import image_names, run_job
from going_modular.deploy.batch.local import score_folder
from going_modular.deploy.batch.ray_engine import READ_SHARE, pool_size, ray_rows, read_reserve, score_folder_ray
from going_modular.deploy.predictor import DEFAULT_BUNDLE, load_predictor

COLUMNS = ("engine", "setting", "images", "wall s", "images/s", "images/s per CPU", "per actor CPU after start-up")
TARGET_IMAGES, TARGET_SECONDS = 10_000_000, 3600
NODE_CPUS = 16  # a common cloud node size for the estimate


def timed(engine: str, setting: str, cpus: float, job) -> dict:
    """Run one scoring job into a fresh CSV and make its table row."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = job(Path(tmp) / "predictions.csv")
        wall = time.perf_counter() - start
    return {"engine": engine, "setting": setting, "images": summary["scored"], "wall s": wall,
            "images/s": summary["scored"] / wall, "images/s per CPU": summary["scored"] / wall / cpus}


def arrival_clock(score, arrivals: list):
    """An engine's score(todo) that also records (time, rows) as each batch of rows reaches the driver."""
    def timed_score(names):
        for rows in score(names):
            arrivals.append((time.perf_counter(), len(rows)))
            yield rows
    return timed_score


def steady_rate(arrivals: list[tuple[float, int]]) -> float:
    """Images/s from the first batch's arrival to the last's: the pipeline running, start-up excluded."""
    (first, _), (last, _) = arrivals[0], arrivals[-1]
    return sum(n for _, n in arrivals[1:]) / max(last - first, 1e-9)


def format_table(rows: list[dict]) -> str:
    return markdown_table(rows, COLUMNS, digits=2)


def cluster_estimate(per_cpu: float, per_actor_cpu: float) -> str:
    """The worked estimate: CPUs and nodes for TARGET_IMAGES in TARGET_SECONDS, from the per-core
    figure, plus the share of each node the engine leaves to the read tasks. An actor measured
    faster than one core was using CPU nobody had reserved (Ray does not cap a process at its
    reservation); a full cluster has none spare, so the slower of the two figures counts."""
    needed_rate = TARGET_IMAGES / TARGET_SECONDS
    rate = min(per_cpu, per_actor_cpu)
    actor_cpus = math.ceil(needed_rate / rate)
    cpus = math.ceil(actor_cpus / (1 - READ_SHARE))
    nodes = math.ceil(cpus / NODE_CPUS)
    return (f"10 million images in one hour = {TARGET_IMAGES:,} / {TARGET_SECONDS} s = {needed_rate:,.0f} images/s. "
            f"One core scores {per_cpu:.1f} images/s (local engine, 1 thread); a Ray actor delivered "
            f"{per_actor_cpu:.1f} images/s per reserved CPU once running. At {rate:.1f} images/s per actor CPU: "
            f"{needed_rate:,.0f} / {rate:.1f} = {actor_cpus} actor CPUs, + {READ_SHARE:.0%} of the cluster for the "
            f"read tasks = {cpus} CPUs = {nodes} nodes of {NODE_CPUS} CPUs; with ~20% headroom for start-up, "
            f"stragglers and retries, {math.ceil(nodes * 1.2)} nodes.")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, quick=True)
    return parser


def main(argv=None) -> int:
    import ray

    args = get_args_parser().parse_args(argv)
    cpus = os.cpu_count() or 1
    rows = []
    with course_photo_folder(args.data, args.quick) as (folder, n), tempfile.TemporaryDirectory() as tmp:
        print(f"[INFO] {n} real images, {cpus} CPUs, bundle {DEFAULT_BUNDLE.name}", file=sys.stderr)
        for threads in (None, 1):
            predictor = load_predictor(DEFAULT_BUNDLE, num_threads=threads)
            predictor.predict_batch(sorted(folder.iterdir())[:args.batch_size])  # one-off ORT set-up
            rows.append(timed("local", f"{threads or 'default'} thread(s)", threads or cpus,
                              lambda out, p=predictor: score_folder(p, folder, out, args.batch_size, progress=False)))

        start = time.perf_counter()
        ray.init(num_cpus=cpus, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        init_seconds = time.perf_counter() - start
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            small = Path(tmp) / "small"
            small.mkdir()
            for image in sorted(folder.iterdir())[:8]:
                os.symlink(image.resolve(), small / image.name)
            startup = timed("ray", "8 images (start-up)", 1,
                            lambda out: score_folder_ray(DEFAULT_BUNDLE, small, out, actors=1, progress=False))
            for actors in (1, 2):
                count, each = pool_size(cpus, actors)  # CPUs the job occupies: actors + the read reserve
                arrivals: list[tuple[float, int]] = []
                score = arrival_clock(ray_rows(DEFAULT_BUNDLE, str(folder), actors, args.batch_size, None), arrivals)
                row = timed("ray", f"{actors} actor(s)", count * each + read_reserve(cpus),
                            lambda out, s=score: run_job(image_names(folder), out, s, progress=False))
                rows.append({**row, "per actor CPU after start-up": steady_rate(arrivals) / (count * each)})
        finally:
            ray.shutdown()
    print(format_table(rows))
    print(f"\nRay start-up: ray.init {init_seconds:.1f} s; a job of 8 images {startup['wall s']:.1f} s "
          f"(actor start + model load + pipeline set-up, paid once per job).")
    per_cpu = rows[1]["images/s"]
    print(cluster_estimate(per_cpu, max(r["per actor CPU after start-up"] for r in rows if r["engine"] == "ray")))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
