"""Streaming: classify frames as they arrive from a live-like source, never falling behind unboundedly.

    python -m going_modular.deploy.stream --source frames/ --fps 30 --output predictions.jsonl
    python -m going_modular.deploy.stream --source clip.mjpeg --fps 25
    ffmpeg -i /dev/video0 -f mjpeg - | python -m going_modular.deploy.stream --source - --fps 0

A producer thread reads JPEG frames from the source (a folder of frames in name order, a Motion
JPEG file, or MJPEG on stdin) at a target FPS and puts them in a small bounded queue; the model
consumes them one at a time. When the model falls behind, the *oldest* waiting frame is dropped
(freshest results win, latency stays bounded) and written out as {"frame": i, "dropped": true}.
Every produced frame becomes exactly one JSON line: a prediction, an error, or a drop. With
--block the producer waits instead of dropping (offline replay: nothing is lost).

Other video formats: convert first, e.g. `ffmpeg -i clip.mp4 -q:v 3 -f mjpeg clip.mjpeg`
(or `ffmpeg -i clip.mp4 frames/%06d.jpg`); MJPEG needs no video decoder beyond Pillow.

Events instead of frames (a Redis Streams consumer group: acks, retries, dead letter, scale-out):
`--source redis://HOST:PORT/DB` and `python -m going_modular.deploy.stream publish` (stream/events.py).
"""
from __future__ import annotations

import argparse
import sys

from going_modular.deploy import cli
from going_modular.deploy.errors import UsageError
from going_modular.deploy.monitor.log import PredictionLog
from going_modular.deploy.predictor import add_model_args, predictor_from_args
from going_modular.deploy.stream import events
from going_modular.deploy.stream.mjpeg import MAX_FRAME_MB
from going_modular.deploy.stream.runtime import JsonLinesWriter, StreamError, open_source, run_stream


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="folder of frames, .mjpeg/.mjpg file, '-' for stdin, or redis://HOST:PORT/DB for an "
                             "event stream (`--source redis://... --help`; stream/events.py)")
    parser.add_argument("--output", default="-", help="JSON lines file ('-' = stdout)")
    parser.add_argument("--fps", type=float, default=30.0, help="source frame rate to replay at (0 = unpaced)")
    parser.add_argument("--queue-size", type=int, default=4, help="frames that may wait for the model")
    parser.add_argument("--block", action="store_true", help="wait for the model instead of dropping frames")
    parser.add_argument("--top-k", type=int, default=3, help="probabilities kept per frame")
    parser.add_argument("--max-frame-mb", type=float, default=MAX_FRAME_MB,
                        help="a bigger frame becomes one error line and is skipped, never buffered whole")
    parser.add_argument("--prediction-log", default=None, metavar="PATH",
                        help="also append one JSON line per prediction to this monitoring log (monitor/log.py); "
                             "default: off")
    add_model_args(parser)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if events.handles(argv):  # `--source redis://...` or `publish`: the event stream has its own flags
        return events.main(argv)
    args = get_args_parser().parse_args(argv)
    if args.fps < 0 or args.queue_size < 1 or args.top_k < 1 or args.max_frame_mb <= 0:
        raise UsageError("--fps must be >= 0, --queue-size and --top-k >= 1, --max-frame-mb > 0")
    frames = open_source(args.source, int(args.max_frame_mb * 1_000_000))
    predictor = predictor_from_args(args)
    try:
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    except OSError as e:
        raise StreamError(f"cannot write {args.output}: {e.strerror or e}") from e
    log = PredictionLog(args.prediction_log) if args.prediction_log else None
    try:
        stats = run_stream(predictor, frames, JsonLinesWriter(out), fps=args.fps,
                           queue_size=args.queue_size, drop=not args.block, top_k=args.top_k, log=log)
    finally:
        if out is not sys.stdout:
            out.close()
        if log is not None:
            log.close()
    if not stats.produced:
        raise StreamError(f"no JPEG frames found in {args.source}")
    print(f"{'interrupted: ' if stats.interrupted else ''}processed {stats.processed}/{stats.produced} frames "
          f"({stats.dropped} dropped, {stats.errors} unreadable) in {stats.seconds:.1f} s: "
          f"sustained {stats.fps:.1f} FPS, mean latency {stats.mean_latency * 1000:.0f} ms", file=sys.stderr)
    return 130 if stats.interrupted else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
