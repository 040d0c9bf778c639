"""How each deployment mode performs with the same model and the same serving predictor.

    python -m benchmarks.deployment_modes            # full: 150 test images, 200 web requests
    python -m benchmarks.deployment_modes --quick    # a smaller, faster run
    python -m benchmarks.deployment_modes --model checkpoints/effnet_lite0_foodvision_mini.pth   # eager

Measures, on the real pizza/steak/sushi test images:
- batch scoring throughput (images/s) of `going_modular.deploy.batch_predict`;
- web-service latency (median / p99, seen by the client) with 50 requests in flight at once,
  against a real uvicorn server in a subprocess;
- streaming: the sustained FPS the model keeps up with (--block, nothing dropped), and what a
  live 30 FPS source loses (drop rate) when it cannot.
Prints a table; timings depend on the machine (and on whatever else is running on it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import zip_longest
from pathlib import Path

import httpx
import numpy as np

from benchmarks.options import add_data_args
from benchmarks.support import serve_in_subprocess
from benchmarks.tables import markdown_table
from going_modular.data_setup import COURSE_DATA_URL, download_data
from going_modular.deploy import cli
from going_modular.deploy.batch.local import score_folder
from going_modular.deploy.predictor import add_model_args, predictor_from_args
from going_modular.deploy.stream.runtime import run_stream

COLUMNS = ("mode", "setting", "items", "throughput/s", "median ms", "p99 ms", "dropped")


def sample_images(data_dir: Path, limit: int) -> list[Path]:
    """Up to `limit` real test images, taken evenly from the three classes."""
    per_class = [sorted((data_dir / "test" / cls).glob("*.jpg")) for cls in ("pizza", "steak", "sushi")]
    interleaved = [p for group in zip_longest(*per_class) for p in group if p is not None]
    return interleaved[:limit]


def latency_ms(seconds: list[float]) -> tuple[float, float]:
    """(median, p99) in milliseconds."""
    return float(np.median(seconds) * 1000), float(np.percentile(seconds, 99) * 1000)


def measure_batch(predictor, images: list[Path], batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, image in enumerate(images):  # links, not copies: the dataset stays where it is
            os.symlink(image.resolve(), folder / f"{i:04d}_{image.name}")
        summary = score_folder(predictor, folder, Path(tmp) / "predictions.csv", batch_size, progress=False)
    return {"mode": "batch", "setting": f"batch size {batch_size}", "items": summary["scored"],
            "throughput/s": summary["images_per_s"]}


def measure_service(checkpoint: Path, images: list[bytes], requests: int, concurrency: int,
                    server_args: tuple[str, ...]) -> dict:
    with serve_in_subprocess(checkpoint, server_args) as server, \
            httpx.Client(base_url=server.url, timeout=300,
                         limits=httpx.Limits(max_connections=concurrency + 5)) as client:

        def post(data: bytes) -> float:
            start = time.perf_counter()
            response = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
            response.raise_for_status()
            return time.perf_counter() - start

        post(images[0])  # first request on a fresh connection pool
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            seconds = list(pool.map(post, (images[i % len(images)] for i in range(requests))))
        wall = time.perf_counter() - start
    median, p99 = latency_ms(seconds)
    return {"mode": "web service", "setting": f"{concurrency} concurrent", "items": requests,
            "throughput/s": requests / wall, "median ms": median, "p99 ms": p99}


def measure_stream(predictor, frames: list[bytes], fps: float, drop: bool) -> dict:
    records = []
    stats = run_stream(predictor, frames, records.append, fps=fps, queue_size=4, drop=drop)
    median, p99 = latency_ms([r["latency"] for r in records if "latency" in r])
    setting = f"live {fps:g} FPS source, drop oldest" if drop else "unpaced, --block (no drops)"
    return {"mode": "stream", "setting": setting, "items": stats.produced, "throughput/s": stats.fps,
            "median ms": median, "p99 ms": p99, "dropped": f"{stats.dropped} ({stats.dropped / stats.produced:.0%})"}


def format_table(rows: list[dict]) -> str:
    return markdown_table(rows, COLUMNS, digits=1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 images and 50 requests instead of 150 and 200")
    add_data_args(parser)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--live-fps", type=float, default=30.0)
    add_model_args(parser)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    n_images, n_requests = (30, 50) if args.quick else (150, 200)
    server_args = ("--threads", str(args.threads)) if args.threads else ()
    data_dir = download_data(COURSE_DATA_URL, args.data)
    images = sample_images(data_dir, n_images)
    predictor = predictor_from_args(args)
    encoded = [p.read_bytes() for p in images]
    predictor.predict_batch(images[:args.batch_size])  # warm-up: the first forward pays one-off setup
    print(f"[INFO] {predictor.arch} ({predictor.runtime}) on {len(images)} real test images; "
          f"threads: {args.threads or 'default'}", file=sys.stderr)
    rows = [measure_batch(predictor, images, args.batch_size),
            measure_service(args.model, encoded, n_requests, args.concurrency, server_args),
            measure_stream(predictor, encoded, fps=0, drop=False),
            measure_stream(predictor, encoded, fps=args.live_fps, drop=True)]
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
