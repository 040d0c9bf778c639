"""The web service under load: 1, 50 and 200 concurrent clients against a real server.

    python -m benchmarks.web_load                       # 20 s per level, the shipped Mini int8 bundle
    python -m benchmarks.web_load --seconds 10 --levels 1 50
    python -m benchmarks.web_load --no-backoff          # 8, 32, 50, 200 wrk connections that retry at once
    python -m benchmarks.web_load --no-backoff --server-args "--workers 2 --threads 1" --levels 32 200
    python -m benchmarks.web_load --monitoring-cost --repeats 3   # /metrics + prediction log on vs off

Each client (an asyncio task holding one keep-alive connection) posts real JPEGs to /predict in
a loop; a 503 is honoured by sleeping its Retry-After, as a well-behaved client does. A separate
process probes /health/live every 100 ms. Per level: accepted req/s, p50/p99 latency of accepted
requests, the count of each status code, the slowest /health answer, and server RSS (from /proc)
before and after. The offline batch throughput of the same bundle (predict_batch on the same
JPEG bytes, batch 32, in this process) is measured in the same run, so the ratio is like for like.

--no-backoff is the retry storm (a load balancer's retries, a `while True: post()`): wrk (Debian's C
load generator, `make wrk`, so the client takes little of the server's CPU) holds the connections and
sends the next request the moment an answer arrives, 503 or not, rotating over the same real JPEGs
(benchmarks/wrk_predict.lua). Per level: accepted req/s and its ratio to the 32-connection level of
the same run, 503/s, p50/p99 of accepted requests, status codes, wrk's socket errors and the slowest
/health/live answer from the probing process.
--monitoring-cost: what monitoring costs in throughput. The same 50-client run against a server
with monitoring off (--no-metrics, no log) and on (GET /metrics, scraped every second as Prometheus
would, at most, plus --prediction-log to a temporary file), back to back, --repeats times, in
alternating order; per pair the on/off ratio of accepted req/s, and their median.
Timings depend on the machine and whatever else runs on it.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from itertools import zip_longest
from pathlib import Path

import numpy as np

from benchmarks.options import add_data_args
from benchmarks.support import ROOT, proc_status_mb, serve_in_subprocess
from benchmarks.tables import markdown_table
from going_modular.data_setup import COURSE_DATA_URL, download_data
from going_modular.deploy import cli
from going_modular.deploy.predictor import OnnxPredictor

COLUMNS = ("clients", "requests", "accepted req/s", "vs offline", "p50 ms", "p99 ms", "status codes",
           "/health max ms", "RSS before→after MB")
NO_BACKOFF_COLUMNS = ("connections", "accepted req/s", "vs 32", "503/s", "p50 ms", "p99 ms", "max ms",
                      "status codes", "socket errors", "/health max ms", "server CPU ms / accepted")
WRK_SCRIPT = Path(__file__).with_name("wrk_predict.lua")


def sample_jpeg_paths(data_dir: Path, limit: int) -> list[Path]:
    per_class = [sorted((data_dir / "test" / cls).glob("*.jpg")) for cls in ("pizza", "steak", "sushi")]
    return [p for group in zip_longest(*per_class) for p in group if p is not None][:limit]


def sample_jpegs(data_dir: Path, limit: int) -> list[bytes]:
    return [p.read_bytes() for p in sample_jpeg_paths(data_dir, limit)]


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the server has used so far: the process plus its children, as rss_mb."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    utime, stime = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(int(c)) for c in children)


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


def run_wrk_level(server, photos: list[Path], connections: int, seconds: float) -> dict:
    """`connections` wrk connections posting the photos for `seconds`, none of them backing off on a 503,
    while a separate process probes /health/live. The server's CPU time per accepted request is the
    figure a busy machine disturbs least: what turning work away costs shows there as it is."""
    url = server.url
    command = ["wrk", f"-t{connections}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s",
               "-s", str(WRK_SCRIPT), url.rstrip("/"), "--", *map(str, photos)]
    with ProcessPoolExecutor(1) as pool:
        health = pool.submit(probe_health, url, seconds)
        cpu = cpu_seconds(server.proc.pid)
        run = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        cpu = cpu_seconds(server.proc.pid) - cpu
        health = health.result()
    lines = [line for line in run.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed (exit code {run.returncode}): {run.stderr.strip() or run.stdout[-500:]}")
    result = json.loads(lines[0].removeprefix("WRK_RESULT "))
    statuses = {int(code): n for code, n in result["statuses"].items()}
    ms = np.array(result["accepted_ms"] or [float("nan")])
    wall = result["duration_s"]
    errors = {kind: n for kind, n in result["errors"].items() if n}
    return {"connections": connections, "accepted req/s": statuses.get(200, 0) / wall,
            "503/s": statuses.get(503, 0) / wall,
            "p50 ms": float(np.percentile(ms, 50)), "p99 ms": float(np.percentile(ms, 99)), "max ms": float(ms.max()),
            "status codes": " ".join(f"{code}: {n}" for code, n in sorted(statuses.items())),
            "socket errors": " ".join(f"{kind}: {n}" for kind, n in errors.items()) or "0",
            "/health max ms": max(health) * 1000,
            "server CPU ms / accepted": cpu * 1000 / max(statuses.get(200, 0), 1)}


def no_backoff_table(server, photos: list[Path], levels: list[int], seconds: float) -> list[dict]:
    rows = []
    for connections in levels:
        rows.append(run_wrk_level(server, photos, connections, seconds))
        print(markdown_table(rows[-1:], NO_BACKOFF_COLUMNS[:2] + NO_BACKOFF_COLUMNS[3:], digits=1).splitlines()[-1],
              flush=True)
    base = next((row["accepted req/s"] for row in rows if row["connections"] == 32), None)
    for row in rows:
        row["vs 32"] = f"{row['accepted req/s'] / base:.0%}" if base else "-"
    return rows


MONITORING_COLUMNS = ("round", "monitoring", "accepted req/s", "p50 ms", "p99 ms", "status codes", "logged",
                      "server CPU ms / accepted", "on / off", "CPU on / off")


def scrape_metrics(url: str, seconds: float) -> int:
    """GET /metrics every second for `seconds` (a Prometheus scraping hard): how many scrapes answered 200."""
    host, port = url.rstrip("/").rsplit("/", 1)[1].split(":")
    ok, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        ok += response.status == 200 and b"foodvision_predictions_total" in response.read()
        conn.close()
        time.sleep(1.0)
    return ok


def monitoring_cost(images: list[bytes], clients: int, seconds: float, repeats: int, server_args: tuple,
                    root: Path) -> list[dict]:
    import tempfile

    from going_modular.deploy.monitor.log import read_log

    rows = []
    for k in range(repeats):
        pair = {}
        for on in ((False, True) if k % 2 == 0 else (True, False)):
            with tempfile.TemporaryDirectory() as tmp:
                log = Path(tmp) / "predictions.jsonl"
                flags = ("--prediction-log", str(log)) if on else ("--no-metrics",)
                with serve_in_subprocess(args=(*server_args, *flags), cwd=root) as server, \
                        ProcessPoolExecutor(1) as pool:
                    scrapes = pool.submit(scrape_metrics, server.url, seconds) if on else None
                    cpu = cpu_seconds(server.proc.pid)
                    row = asyncio.run(run_level(server.url, images, clients, seconds))
                    cpu = cpu_seconds(server.proc.pid) - cpu
                    if scrapes is not None and scrapes.result() < 1:
                        raise RuntimeError("/metrics did not answer during the run")
                accepted = row["accepted req/s"] * seconds
                row.update({"round": k + 1, "monitoring": "on" if on else "off",
                            "server CPU ms / accepted": cpu * 1000 / max(accepted, 1),
                            "logged": len(read_log(log).records) if on else "-"})
            pair[on] = row
            print(markdown_table([row], MONITORING_COLUMNS[:-2], digits=1).splitlines()[-1], flush=True)
        pair[True]["on / off"] = f"{pair[True]['accepted req/s'] / pair[False]['accepted req/s']:.3f}"
        cpu_ratio = pair[True]["server CPU ms / accepted"] / pair[False]["server CPU ms / accepted"]
        pair[True]["CPU on / off"] = f"{cpu_ratio:.3f}"
        rows += [pair[False], pair[True]]
    return rows


def format_table(rows: list[dict]) -> str:
    return markdown_table(rows, COLUMNS, digits=1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+",
                        help="concurrent clients (default 1 50 200; with --no-backoff 8 32 50 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level")
    parser.add_argument("--no-backoff", action="store_true",
                        help="wrk clients that retry at once instead of honouring Retry-After")
    add_data_args(parser, batch_size=False)
    parser.add_argument("--monitoring-cost", action="store_true",
                        help="50 clients (or --levels N), monitoring off vs on, back to back (--repeats pairs)")
    parser.add_argument("--repeats", type=int, default=3, help="--monitoring-cost: off/on pairs")
    parser.add_argument("--server-args", default="", help="extra flags for going_modular.deploy.serve, one string")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="the checkout whose server is measured (another one: before/after in one run)")
    return parser


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    server_args = tuple(args.server_args.split())
    if args.no_backoff:
        if shutil.which("wrk") is None:
            parser.error("--no-backoff needs wrk (Debian: apt-get install wrk, or `make wrk`)")
        photos = sample_jpeg_paths(download_data(COURSE_DATA_URL, args.data), 12)
        with serve_in_subprocess(args=server_args, cwd=args.server_root) as server:
            rows = no_backoff_table(server, photos, args.levels or [8, 32, 50, 200], args.seconds)
        print(f"\n{args.server_root} {args.server_args or '(default settings)'}, {len(photos)} photos\n")
        print(markdown_table(rows, NO_BACKOFF_COLUMNS, digits=1))
        return 0
    images = sample_jpegs(download_data(COURSE_DATA_URL, args.data), 150)
    if args.monitoring_cost:
        clients = (args.levels or [50])[0]
        rows = monitoring_cost(images, clients, args.seconds, args.repeats, server_args, args.server_root)
        ratios = sorted(float(r["on / off"]) for r in rows if r.get("on / off"))
        cpu_ratios = sorted(float(r["CPU on / off"]) for r in rows if r.get("CPU on / off"))
        print(f"\n{clients} clients, {args.seconds:g} s a run, {args.server_args or '(default settings)'}\n")
        print(markdown_table(rows, MONITORING_COLUMNS, digits=1))
        print(f"\nmedian on/off throughput ratio: {ratios[len(ratios) // 2]:.3f} "
              f"(cost {1 - ratios[len(ratios) // 2]:.1%}); median on/off server CPU per accepted request: "
              f"{cpu_ratios[len(cpu_ratios) // 2]:.3f}")
        return 0
    args.levels = args.levels or [1, 50, 200]
    offline = offline_throughput(images)
    print(f"offline batch throughput (predict_batch, batch 32, same {len(images)} JPEGs): {offline:.1f} images/s")
    rows = []
    with serve_in_subprocess(args=server_args, cwd=args.server_root) as server:
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
