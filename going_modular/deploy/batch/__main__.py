"""Batch scoring: predict every image under a folder and write one CSV row per image.

    python -m going_modular.deploy.batch --input photos/ --output predictions.csv
    python -m going_modular.deploy.batch --input photos/ --output predictions.csv --engine ray

Rows are `path,label,prob,top3,known,seconds,model_id,precision,error` with `path` relative to --input.
--prediction-log PATH also appends one JSON line per prediction to the monitoring log (monitor/log.py). Two engines give
the same rows: `local` (default) scores in this process; `ray` runs the same predictor in a Ray
Data actor pool, on this machine or on a cluster (`--address`; see batch/ray_engine.py).
(`python -m going_modular.deploy.batch_predict` is the same command.)

A run is resumable, never leaves a half-written output, allows one writer per output, accepts any
file name and turns an unreadable image into a row with `error` filled in: batch/job.py says how.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from going_modular.deploy import cli
from going_modular.deploy.batch.job import BatchError, image_names, output_lock, run_locked_job
from going_modular.deploy.batch.local import local_rows
from going_modular.deploy.monitor.log import PredictionLog
from going_modular.deploy.predictor import add_model_args, predictor_from_args

ENGINES = ("local", "ray")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True,
                        help="folder of images (searched recursively); with --engine ray also a URI "
                             "pyarrow reads (s3://bucket/photos, gs://...)")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write (re-runs resume it)")
    # Small batches: on a few CPU cores a batch of 32 is no faster per image than 4-8 (the
    # activations stop fitting in cache), and a crash loses less (`python -m benchmarks.deployment_modes`).
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: this process (default); ray: a Ray Data actor pool (batch/ray_engine.py)")
    parser.add_argument("--address", default=None,
                        help="--engine ray: the cluster to run on (auto, ray://head:10001); "
                             "default: start Ray on this machine for the run")
    parser.add_argument("--actors", type=int, default=None,
                        help="--engine ray: predictor actors (default: what the cluster's CPUs allow, "
                             "leaving one for reading and decoding)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--prediction-log", default=None, metavar="PATH",
                        help="append one JSON line per prediction (monitor/log.py; the monitor reads it); "
                             "default: off")
    add_model_args(parser)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.engine == "local" and ("://" in args.input or args.address or args.actors is not None):
        raise BatchError("--address, --actors and URI inputs need --engine ray; the local engine reads a folder "
                         "in this process")
    log = PredictionLog(args.prediction_log) if args.prediction_log else None
    try:
        if args.engine == "ray":
            from going_modular.deploy.batch.ray_engine import score_folder_ray  # takes the lock before starting Ray

            summary = score_folder_ray(args.model, args.input, args.output, actors=args.actors, address=args.address,
                                       batch_size=args.batch_size, num_threads=args.threads,
                                       progress=not args.no_progress, log=log)
        else:
            # The lock first: a second run on the same output stops before loading anything.
            with output_lock(args.output):
                names = image_names(Path(args.input))  # fail fast on a bad folder, before loading the model
                predictor = predictor_from_args(args)
                rows = local_rows(predictor, Path(args.input), args.batch_size, log)
                summary = run_locked_job(names, args.output, rows, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows were saved to {args.output}; re-run the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if log is not None:
            log.close()
            if not log.status()["ok"]:
                print(f"warning: prediction log: {log.status()['last_error']}", file=sys.stderr)
    if not summary["scored"]:
        print(f"nothing to do: all {summary['total']} images are already in {args.output}")
        return 0
    print(f"scored {summary['scored']} images ({summary['errors']} unreadable, {summary['skipped']} already done) "
          f"in {summary['seconds']:.1f} s: {summary['images_per_s']:.1f} images/s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
