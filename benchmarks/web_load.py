"""The web service under load: 1, 50 and 200 concurrent clients against a real server.

    python -m benchmarks.web_load                       # 20 s per level, the shipped Mini int8 bundle
    python -m benchmarks.web_load --seconds 10 --levels 1 50

Each client (an asyncio task holding one keep-alive connection) posts real JPEGs to /predict in
a loop; a 503 is honoured by sleeping its Retry-After, as a well-behaved client does. A separate
process probes /health/live every 100 ms. Per level: accepted req/s, p50/p99 latency of accepted
requests, the count of each status code, the slowest /health answer, and server RSS (from /proc)
before and after. The offline batch throughput of the same bundle (predict_batch on the same
JPEG bytes, batch 32, in this process) is measured in the same run, so the ratio is like for like.
Timings depend on the machine and whatever else runs on it.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from itertools import zip_longest
from pathlib import Path

import numpy as np

from benchmarks.options import add_data_args
from benchmarks.support import proc_status_mb, serve_in_subprocess
from benchmarks.tables import markdown_table
from going_modular.data_setup import COURSE_DATA_URL, download_data
from going_modular.deploy import cli
from going_modular.deploy.predictor import OnnxPredictor

COLUMNS = ("clients", "requests", "accepted req/s", "vs offline", "p50 ms", "p99 ms", "status codes",
           "/health max ms", "RSS before→after MB")


def sample_jpegs(data_dir: Path, limit: int) -> list[bytes]:
    per_class = [sorted((data_dir / "test" / cls).glob("*.jpg")) for cls in ("pizza", "steak", "sushi")]
    return [p.read_bytes() for group in zip_longest(*per_class) for p in group if p is not None][:limit]


def offline_throughput(images: list[bytes], batch_size: int = 32, rounds: int = 3) -> float:
    """Images/s of predict_batch (decode + preprocess + forward) on the same bytes, best of `rounds`."""
    predictor = OnnxPredictor()
    predictor.predict_batch(images[:batch_size])  # warm-up
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            predictor.predict_batch(images[i:i + batch_size])
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def rss_mb(pid: int) -> float:
    """Resident memory of the server: the process plus its children (the workers of --workers N, each
    with its own model; the supervisor alone holds no model)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return proc_status_mb(pid, "VmRSS") + sum(rss_mb(int(child)) for child in children)


def request_bytes(host: str, data: bytes) -> bytes:
    """A complete keep-alive POST /predict of one JPEG, built once: the client's per-request work is a write."""
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers of one HTTP/1.1 response; its body (Content-Length) is read and dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
    await reader.readexactly(int(headers.get("content-length", 0)))
    return int(head[0].split()[1]), headers


def probe_health(url: str, seconds: float) -> list[float]:
    """GET /health/live every 100 ms for `seconds`: the latencies. Runs in its own process, so what it
    measures is the server, not the load generator's busy event loop."""
    host, port = url.rstrip("/").rsplit("/", 1)[1].split(":")
    out, stop = [], time.perf_counter() + seconds
    while time.perf_counter() < stop:
        start = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", "/health/live")
        if conn.getresponse().status != 200:
            raise RuntimeError("/health/live did not answer 200")
        conn.close()
        out.append(time.perf_counter() - start)
        time.sleep(0.1)
    return out


async def run_level(url: str, images: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` keep-alive connections posting JPEGs back to back for `seconds`. The client speaks
    HTTP/1.1 over raw asyncio streams: an HTTP library costs as much CPU per request as the server
    (httpx measured: 7.8 s of client CPU against 10.3 s of server CPU at 50 clients), and on a
    2-core machine the load generator would be what is measured."""
    host, port = url.rstrip("/").rsplit("/", 1)[1].split(":")
    requests = [request_bytes(f"{host}:{port}", data) for data in images]
    latencies, statuses = [], Counter()
    stop = time.perf_counter() + seconds

    async def one_client(k: int) -> None:
        i, conn = k, None
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, int(port))
                reader, writer = conn
                writer.write(requests[i % len(requests)])
                await writer.drain()
                status, headers = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                statuses[type(e).__name__] += 1
                conn = None
                continue
            statuses[status] += 1
            if headers.get("connection") == "close":
                conn[1].close()
                conn = None
            if status == 200:
                latencies.append(time.perf_counter() - start)
            elif status == 503:
                await asyncio.sleep(float(headers.get("retry-after", 1)))
            i += clients
        if conn is not None:
            conn[1].close()

    with ProcessPoolExecutor(1) as pool:
        health = pool.submit(probe_health, url, seconds)
        start = time.perf_counter()
        await asyncio.gather(*(one_client(k) for k in range(clients)))
        wall = time.perf_counter() - start
        health = health.result()
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": sum(statuses.values()), "accepted req/s": len(latencies) / wall,
            "p50 ms": float(np.percentile(ms, 50)), "p99 ms": float(np.percentile(ms, 99)),
            "status codes": " ".join(f"{code}: {n}" for code, n in sorted(statuses.items(), key=str)),
            "/health max ms": max(health) * 1000}


def format_table(rows: list[dict]) -> str:
    return markdown_table(rows, COLUMNS, digits=1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 50, 200], help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level")
    add_data_args(parser, batch_size=False)
    parser.add_argument("--server-args", default="", help="extra flags for going_modular.deploy.serve, one string")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    images = sample_jpegs(download_data(COURSE_DATA_URL, args.data), 150)
    offline = offline_throughput(images)
    print(f"offline batch throughput (predict_batch, batch 32, same {len(images)} JPEGs): {offline:.1f} images/s")
    rows = []
    with serve_in_subprocess(args=tuple(args.server_args.split())) as server:
        for clients in args.levels:
            before = rss_mb(server.proc.pid)
            row = asyncio.run(run_level(server.url, images, clients, args.seconds))
            row["vs offline"] = f"{row['accepted req/s'] / offline:.0%}"
            row["RSS before→after MB"] = f"{before:.0f}→{rss_mb(server.proc.pid):.0f}"
            rows.append(row)
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\noffline batch throughput: {offline:.1f} images/s\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
