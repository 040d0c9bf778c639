"""The web service's Prometheus metrics (GET /metrics), counted in every --workers process.

Names dashboards and alerts rely on (README "After deployment: monitoring"):
    foodvision_requests_total{endpoint,status}   answered requests
    foodvision_request_seconds{endpoint}          histogram, request arrival -> response sent
    foodvision_batch_size                         histogram, images per forward pass
    foodvision_queue_depth                        gauge, requests in progress + waiting (all workers)
    foodvision_rejected_total{reason}             503s: "capacity" (admission), "deadline"
    foodvision_predictions_total{label,known}     one per image predicted
    foodvision_model_info{model_id,precision,arch,runtime}   1

Multiprocess mode: prometheus_client keeps each process's values in files under
PROMETHEUS_MULTIPROC_DIR, and a scrape, whichever worker answers it, adds them all up. The
supervisor (web/__main__.py, `multiprocess_dir`) sets that variable to a fresh folder before any
worker imports prometheus_client (it reads the variable at import), removes the folder at exit,
and marks workers that died, so their gauge values stop counting.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Labels of known routes only: a scanner probing random paths must not create a series per path.
ENDPOINTS = ("/predict", "/predict/batch", "/health/ready", "/health/live", "/health", "/metrics", "/")
# Requests take ~5 ms alone, seconds under overload; the deadline (10 s) bounds them.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
REJECT_REASONS = ("capacity", "deadline")
_FILE_PID = re.compile(r"_(\d+)\.db$")


def multiprocess_mode() -> bool:
    """prometheus_client chose file-backed values at its import (PROMETHEUS_MULTIPROC_DIR was set then)."""
    from prometheus_client import values

    return getattr(values.ValueClass, "_multiprocess", False)


class Metrics:
    """One app's metric objects. In multiprocess mode their values live in the shared folder; else
    (an app built in-process, as in a notebook) in a registry of this app's own, so that two apps
    in one process never clash over a name."""

    def __init__(self, predictor):
        from functools import partial

        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = None if multiprocess_mode() else CollectorRegistry()
        Counter, Gauge, Histogram = (partial(kind, registry=self.registry) for kind in (Counter, Gauge, Histogram))

        self.requests = Counter("foodvision_requests", "Answered requests", ["endpoint", "status"])
        self.seconds = Histogram("foodvision_request_seconds", "Request arrival to response sent", ["endpoint"],
                                 buckets=SECONDS_BUCKETS)
        self.batch_size = Histogram("foodvision_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS)
        # livesum: the sum over the workers alive now (a dead worker's last value does not count)
        self.queue_depth = Gauge("foodvision_queue_depth", "Requests in progress or waiting for a slot",
                                 multiprocess_mode="livesum")
        self.rejected = Counter("foodvision_rejected", "Requests refused with 503", ["reason"])
        for reason in REJECT_REASONS:  # a zero, not a missing series, until the first refusal (alerts on rate())
            self.rejected.labels(reason)
        self.predictions = Counter("foodvision_predictions", "Images predicted", ["label", "known"])
        info = Gauge("foodvision_model_info", "The model that answers", ["model_id", "precision", "arch", "runtime"],
                     multiprocess_mode="max")
        info.labels(predictor.model_id, predictor.precision, predictor.arch, predictor.runtime).set(1)
        self._predicted = {}  # (label, known) -> its child counter: labels() costs a lock and a lookup

    def predicted(self, result: dict) -> None:
        key = (result["label"], str(result.get("known")).lower())
        child = self._predicted.get(key) or self._predicted.setdefault(key, self.predictions.labels(*key))
        child.inc()

    def render(self) -> bytes:
        """The text of a scrape: in multiprocess mode every process's values added up."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def middleware(self, app):
        """ASGI middleware counting every answered request by route and status."""
        requests, seconds = self.requests, self.seconds

        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            path = scope["path"]
            endpoint = path if path in ENDPOINTS else "other"
            start, status = time.perf_counter(), 500

            async def send_status(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                requests.labels(endpoint, str(status)).inc()
                seconds.labels(endpoint).observe(time.perf_counter() - start)
        return counted


@contextlib.contextmanager
def multiprocess_dir(check_every_s: float = 2.0) -> Iterator[Path]:
    """The supervisor's side: a fresh PROMETHEUS_MULTIPROC_DIR for this run (a stale one would add
    a previous run's counts), dead workers marked while it runs, the folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="foodvision-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    from prometheus_client import multiprocess  # after setting the folder: the mode is chosen at import
    stop = threading.Event()

    def mark_dead():
        while not stop.wait(check_every_s):
            pids = {int(m.group(1)) for p in folder.glob("*.db") if (m := _FILE_PID.search(p.name))}
            for pid in pids - {os.getpid()}:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:  # uvicorn restarts a dead worker under a new pid
                    multiprocess.mark_process_dead(pid, str(folder))
                except PermissionError:
                    pass

    def terminated(signum, _frame):
        raise _Terminated

    # uvicorn handles SIGTERM while it serves, then re-raises it to the handler it found: the default
    # one would end the process without running the cleanup below. So ours cleans up first, then
    # dies of SIGTERM all the same (the exit status still says what stopped the server).
    previous = signal.getsignal(signal.SIGTERM)
    ours = previous is signal.SIG_DFL and threading.current_thread() is threading.main_thread()
    if ours:
        signal.signal(signal.SIGTERM, terminated)
    watcher = threading.Thread(target=mark_dead, name="metrics-dead-workers", daemon=True)
    watcher.start()
    killed = False
    try:
        yield folder
    except _Terminated:
        killed = True
    finally:
        if ours:
            signal.signal(signal.SIGTERM, previous)
        stop.set()
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
    if killed:
        signal.raise_signal(signal.SIGTERM)


class _Terminated(BaseException):
    """SIGTERM reached the supervisor: leave the `with` (cleaning up) before dying of it."""
