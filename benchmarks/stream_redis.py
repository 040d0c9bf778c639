"""The Redis Streams event source against the local batch engine, on the same photos in the same run.

    python -m benchmarks.stream_redis            # all 600 real course images (train + test)
    python -m benchmarks.stream_redis --quick    # the 150 test images

Starts its own redis-server (benchmarks/redis_support.py: a free 127.0.0.1 port, a temporary folder) and
measures, with the shipped int8 bundle:
- the local batch engine (batch_predict.score_folder) with 1 thread and the default threads: the
  baseline, images/s;
- messages/s with 1 and 2 consumer processes (`--threads 1` each) in one group: every photo published
  at once as a message carrying its bytes, timed from the first publish to the last result, as the
  Redis server's clock stamps them (the stream ids);
- publish -> result latency p50/p99 (again from the stream ids: the input's id is its publish time,
  the result's id the time it was written) with messages published one by one at half the rate
  the consumers sustained, so that it measures the path, not a backlog;
- the cost over the local engine (per consumer vs one local thread), and a worked estimate of the
  consumers (and Redis traffic) 10,000 photos/s needs.
Timings depend on the machine and whatever else runs on it; compare ratios within one run.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.deployment_modes import latency_ms
from benchmarks.options import add_data_args
from benchmarks.redis_support import ConsumerProcess, redis_server, wait_for
from benchmarks.support import course_photo_folder
from benchmarks.tables import markdown_table
from going_modular.deploy import cli
from going_modular.deploy.batch.local import score_folder
from going_modular.deploy.predictor import DEFAULT_BUNDLE, load_predictor
from going_modular.deploy.stream.events import publish, read_results

COLUMNS = ("mode", "setting", "messages", "wall s", "messages/s", "per consumer or thread", "vs local 1 thread",
           "p50 ms", "p99 ms")
TARGET_RATE = 10_000
GROUP = "bench"


def stream_ms(stream_id: str) -> int:
    """The milliseconds part of a stream id: when Redis appended the entry (its own clock)."""
    return int(stream_id.split("-")[0])


def start_consumers(url: str, stream: str, count: int, log_dir: Path) -> list[ConsumerProcess]:
    consumers = [ConsumerProcess(url, f"{stream}-{i}", ("--input-stream", stream, "--group", GROUP,
                                                         "--output-stream", f"{stream}:out", "--create-group",
                                                         "--threads", "1"), log_dir=log_dir)
                 for i in range(count)]
    for c in consumers:  # model loaded, about to read: start-up is not what is measured
        wait_for(lambda c=c: "waiting for messages" in c.log(), 120, f"consumer {c.name} to start")
    return consumers


def stop_consumers(consumers: list[ConsumerProcess]) -> None:
    for c in consumers:
        c.signal(signal.SIGTERM)
    for c in consumers:
        rc = c.wait(60)
        c.close()
        if rc != 0:
            raise RuntimeError(f"consumer {c.name} exited {rc}: {c.log()[-2000:]}")


def throughput_run(server, photos: list[Path], consumers: int, log_dir: Path) -> dict:
    """Every photo published at once; messages/s from the first publish to the last result."""
    stream, client = f"burst{consumers}", server.client()
    workers = start_consumers(server.url, stream, consumers, log_dir)
    try:
        ids = publish(client, stream, photos)
        wait_for(lambda: client.xlen(f"{stream}:out") >= len(ids), 600, "every result", every=0.2)
    finally:
        stop_consumers(workers)
    results = read_results(client, f"{stream}:out")
    last = max(stream_ms(mid.decode()) for mid, _ in client.xrevrange(f"{stream}:out", count=1))
    wall = (last - stream_ms(ids[0])) / 1000
    assert len(results) == len(ids) and not any(r["error"] for r in results.values())
    return {"mode": "redis stream", "setting": f"{consumers} consumer(s), burst", "messages": len(ids),
            "wall s": wall, "messages/s": len(ids) / wall, "per consumer or thread": len(ids) / wall / consumers}


def latency_run(server, photos: list[Path], consumers: int, rate: float, log_dir: Path) -> dict:
    """Photos published one by one at `rate` per second: publish -> result latency."""
    stream, client = f"paced{consumers}", server.client()
    workers = start_consumers(server.url, stream, consumers, log_dir)
    try:
        start = time.perf_counter()
        for i, photo in enumerate(photos):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            publish(client, stream, [photo])
        wait_for(lambda: client.xlen(f"{stream}:out") >= len(photos), 600, "every result", every=0.2)
    finally:
        stop_consumers(workers)
    seconds = [(stream_ms(mid.decode()) - stream_ms(fields[b"source_id"].decode())) / 1000
               for mid, fields in client.xrange(f"{stream}:out")]
    p50, p99 = latency_ms(seconds)
    return {"mode": "redis stream", "setting": f"{consumers} consumer(s), paced at {rate:.0f}/s",
            "messages": len(seconds), "p50 ms": p50, "p99 ms": p99}


def consumer_estimate(per_consumer: float, mean_bytes: float) -> str:
    needed = math.ceil(TARGET_RATE / per_consumer)
    traffic = TARGET_RATE * mean_bytes / 1e6
    return (f"10,000 photos/s at {per_consumer:.1f} messages/s per single-threaded consumer: {TARGET_RATE:,} / "
            f"{per_consumer:.1f} = {needed} consumers (one core each), {math.ceil(needed * 1.2)} with ~20% headroom "
            f"for restarts, reclaims and uneven photos. Redis then carries {traffic:.0f} MB/s of photos in "
            f"(mean message {mean_bytes / 1e3:.0f} KB) plus the results out: past one Redis node's network, so "
            f"publish `uri` messages (photos in object storage, messages of ~100 bytes) or shard over several "
            f"streams (one group each).")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, quick=True)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    cpus = os.cpu_count() or 1
    rows = []
    with course_photo_folder(args.data, args.quick) as (folder, n), tempfile.TemporaryDirectory() as tmp:
        photos = sorted(folder.iterdir())
        mean_bytes = sum(p.stat().st_size for p in photos) / len(photos)
        print(f"[INFO] {n} real images ({mean_bytes / 1e3:.0f} KB mean), {cpus} CPUs, bundle {DEFAULT_BUNDLE.name}",
              file=sys.stderr)
        for threads in (1, None):
            predictor = load_predictor(DEFAULT_BUNDLE, num_threads=threads)
            predictor.predict_batch(photos[:args.batch_size])  # one-off ONNX Runtime set-up
            start = time.perf_counter()
            summary = score_folder(predictor, folder, Path(tmp) / f"local{threads}.csv", args.batch_size,
                                   progress=False)
            wall = time.perf_counter() - start
            rows.append({"mode": "local batch engine", "setting": f"{threads or 'default'} thread(s)",
                         "messages": summary["scored"], "wall s": wall, "messages/s": summary["scored"] / wall,
                         "per consumer or thread": summary["scored"] / wall / (threads or cpus)})
        local_one = rows[0]["messages/s"]
        with redis_server() as server:
            for consumers in (1, 2):
                rows.append(throughput_run(server, photos, consumers, Path(tmp)))
            for consumers in (1, 2):
                rate = rows[1 + consumers]["messages/s"] / 2
                rows.append(latency_run(server, photos[: max(60, len(photos) // 3)], consumers, rate, Path(tmp)))
    for row in rows:
        if "per consumer or thread" in row:
            row["vs local 1 thread"] = f"{row['per consumer or thread'] / local_one:.0%}"
    print(markdown_table(rows, COLUMNS, digits=1))
    print("\n" + consumer_estimate(rows[2]["messages/s"], mean_bytes))  # one consumer, one thread: one core's worth
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
