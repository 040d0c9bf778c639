"""The prediction log: one JSON line per prediction, written by every serving mode, read by the monitor.

    log = PredictionLog("predictions.jsonl")           # or log_from_env() for the demos
    log.write(prediction_record(predictor, result, stats, mode="web", id=request_id))
    log.status()   # for /health/ready: {"ok", "written", "dropped", "failed", "last_error", ...}
    read_log("predictions.jsonl").records

Serving never waits for the disk: `write` only puts the record on a bounded queue (full: the record
is dropped and counted); a background thread serialises, batches and appends. A disk that is full
or a path that cannot be written costs the log, not the predictions: the records are counted as
failed, `status()` says why, and the thread retries the file a few seconds later.

Files: appended with O_APPEND, one os.write() of whole lines at a time, so several processes (the
web service's workers) can share one log, and a killed process leaves at worst its last line torn
(a later writer starts on a fresh line; readers skip torn lines with a warning). Size-bounded: past
`max_bytes` the file is rotated to PATH.1 (PATH.1 to PATH.2 ... up to `backups`; the oldest is
deleted), under a lock file PATH.lock so that concurrent writers rotate once; with several writers
a file may pass max_bytes by the batches they were writing at that moment.

Standard library only: this module runs inside every serving process.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

LOG_ENV = "FOODVISION_PREDICTION_LOG"
# One record: the prediction, who answered it, and cheap statistics of the image (never its pixels).
PREDICTION_FIELDS = ("label", "prob", "top3", "known", "ood_score", "latency")
IMAGE_FIELDS = ("width", "height", "format", "brightness", "contrast")
RECORD_FIELDS = ("time", "mode", "id", "model_id", "precision", *PREDICTION_FIELDS, *IMAGE_FIELDS)
# What makes a JSON line one of ours (a line without them is "foreign": another program's log).
REQUIRED_FIELDS = ("time", "model_id", "label", "prob")
DEFAULT_MAX_BYTES = 64 * 2**20  # ~200k predictions of ~330 bytes a file
DEFAULT_BACKUPS = 3
DEFAULT_QUEUE = 10_000
FLUSH_BYTES = 256 * 1024  # one write once this much is pending...
FLUSH_SECONDS = 0.5  # ...or this long after the oldest pending record
RETRY_SECONDS = 5.0  # after a failed write, how long before the file is tried again
log = logging.getLogger(__name__)
_STOP = object()  # queued by close(): the writer thread ends after it


def _round(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def prediction_record(predictor, result: dict, stats: dict | None = None, *, mode: str, id=None,
                      when: float | None = None) -> dict:
    """The log record of one prediction: the same fields from every mode (RECORD_FIELDS).

    predictor: the serving predictor (its model_id and precision say which model answered);
    result: what it returned for the image (`predict`, or `result` of a micro-batched row);
    stats: `monitor.stats.image_stats` of the image (None: the image fields are null);
    mode: "web", "batch", "stream", "demo"...; id: the request id, frame number or file name
    that joins the record to the mode's own output.
    """
    stats = stats or {}
    top = list(result.get("probs", {}).items())[:3]
    moment = datetime.fromtimestamp(time.time() if when is None else when, timezone.utc)
    return {"time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "mode": mode,
            "id": id, "model_id": predictor.model_id, "precision": predictor.precision,
            "label": result["label"], "prob": _round(result["prob"]),
            "top3": [[name, _round(p)] for name, p in top], "known": result.get("known"),
            "ood_score": _round(result.get("ood_score")), "latency": _round(result.get("seconds"), 5),
            **{k: stats.get(k) for k in IMAGE_FIELDS}}


@dataclass
class _Counters:
    written: int = 0
    dropped: int = 0  # the queue was full: serving outpaced the disk
    failed: int = 0  # the file could not be written (disk full, no permission, not a directory...)
    rotations: int = 0
    last_error: str | None = None
    failing_since: float | None = None


class PredictionLog:
    """A size-bounded JSON-lines prediction log written by a background thread (module docstring).

    Thread-safe; `write` never blocks and never raises for I/O problems.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 queue_size: int = DEFAULT_QUEUE, flush_seconds: float = FLUSH_SECONDS):
        if max_bytes < 1 or backups < 0 or queue_size < 1:
            raise ValueError("PredictionLog needs max_bytes >= 1, backups >= 0 and queue_size >= 1")
        self.path = Path(path)
        self.max_bytes, self.backups, self.flush_seconds = max_bytes, backups, flush_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._counters = _Counters()
        self._lock = threading.Lock()  # counters, read by status() from serving threads
        self._fd: int | None = None
        self._retry_at = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"prediction-log:{self.path.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PredictionLog({str(self.path)!r})"

    # -- serving side ------------------------------------------------------------------------
    def write(self, record: dict) -> bool:
        """Queue one record (a dict from `prediction_record`); False if it was dropped (queue full, closed)."""
        if not self._closed:
            try:
                self._queue.put_nowait(record)
                return True
            except queue.Full:
                pass
        with self._lock:
            self._counters.dropped += 1
        return False

    def status(self) -> dict:
        """What /health/ready shows: ok (False while writes fail), the counters, the last error."""
        with self._lock:
            c = self._counters
            return {"path": str(self.path), "ok": c.failing_since is None, "written": c.written,
                    "dropped": c.dropped, "failed": c.failed, "queued": self._queue.qsize(),
                    "rotations": c.rotations, "last_error": c.last_error,
                    "max_bytes": self.max_bytes, "backups": self.backups}

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far has been written (or counted as failed); False on timeout."""
        if self._closed or not self._thread.is_alive():
            return False
        done = threading.Event()
        try:  # a marker behind the records: the thread writes what it holds when it reaches it
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout`), then stop the thread and close the file."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        atexit.unregister(self.close)

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[bytes] = []
        size, oldest = 0, 0.0
        while True:
            wait = max(0.0, oldest + self.flush_seconds - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if isinstance(item, dict):
                try:
                    line = (json.dumps(item, separators=(",", ":"), default=str) + "\n").encode()
                    if not pending:
                        oldest = time.monotonic()
                    pending.append(line)
                    size += len(line)
                except Exception as e:  # a value json cannot represent at all: count it, keep going
                    self._failed(1, f"record not serialisable: {e}")
            marker = item if isinstance(item, threading.Event) or item is _STOP else None
            if pending and (marker is not None or size >= FLUSH_BYTES
                            or time.monotonic() - oldest >= self.flush_seconds):
                self._append(pending)
                pending, size = [], 0
            if isinstance(marker, threading.Event):
                marker.set()
            elif marker is _STOP:
                break
        self._close_fd()

    def _failed(self, records: int, error: str) -> None:
        with self._lock:
            c = self._counters
            c.failed += records
            if c.last_error != error:
                log.warning("prediction log %s: %s (predictions go on; %d records lost so far)", self.path, error,
                            c.failed)
            c.last_error = error
            c.failing_since = c.failing_since or time.time()

    def _append(self, lines: list[bytes]) -> None:
        if time.monotonic() < self._retry_at:
            self._failed(len(lines), self._counters.last_error or "log file unavailable")
            return
        data = b"".join(lines)
        try:
            fd = self._open()
            if self.max_bytes and os.fstat(fd).st_size + len(data) > self.max_bytes and os.fstat(fd).st_size > 0:
                fd = self._rotate()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as e:
            self._close_fd()
            self._retry_at = time.monotonic() + RETRY_SECONDS
            reason = "disk full" if e.errno == errno.ENOSPC else e.strerror or type(e).__name__
            if e.filename and e.errno != errno.ENOSPC and str(e.filename) != str(self.path):
                reason += f" ({e.filename})"
            self._failed(len(lines), f"cannot write {self.path}: {reason}")
            return
        with self._lock:
            self._counters.written += len(lines)
            self._counters.failing_since = None

    def _open(self) -> int:
        """The file descriptor to append to, reopened when another process rotated the file away."""
        if self._fd is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            self._close_fd()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self._end_torn_line(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _end_torn_line(self, fd: int) -> None:
        """A file whose last line a killed writer left torn gets a newline, so our first line stays whole."""
        size = os.fstat(fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")

    def _rotate(self) -> int:
        """PATH -> PATH.1 -> ... -> PATH.<backups> (the oldest dropped), once even with several writers."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:  # moved away by a writer that did not hold this lock (an older one)
                    current = None
                if current and current.st_ino == os.fstat(self._fd).st_ino and current.st_size > 0:  # not yet rotated
                    if self.backups == 0:
                        os.truncate(self.path, 0)
                    else:
                        for i in range(self.backups - 1, 0, -1):
                            older = self.path.with_name(f"{self.path.name}.{i}")
                            if older.exists():
                                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
                        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
                    with self._lock:
                        self._counters.rotations += 1
                self._close_fd()
                # Still under the lock: the next writer to take it finds the new file, never a gap.
                return self._open()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def log_from_env(env=None, **kwargs) -> PredictionLog | None:
    """The demos' prediction log: a PredictionLog at $FOODVISION_PREDICTION_LOG, None (off) when unset."""
    path = (os.environ if env is None else env).get(LOG_ENV, "").strip()
    return PredictionLog(path, **kwargs) if path else None


def log_files(path: str | os.PathLike) -> list[Path]:
    """The log's files, oldest first: PATH.<backups> ... PATH.1, PATH (those that exist)."""
    path = Path(path)
    backups = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            backups.append((int(suffix), p))
    return [p for _, p in sorted(backups, reverse=True)] + ([path] if path.is_file() else [])


@dataclass
class LogContents:
    records: list[dict] = field(default_factory=list)
    invalid: int = 0  # torn or not JSON
    foreign: int = 0  # JSON, but not a prediction record (another program's lines)
    files: list[Path] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.invalid + self.foreign


def read_log(path: str | os.PathLike, backups: bool = True) -> LogContents:
    """Every prediction record of a log, oldest first (its rotated files too, unless backups=False).

    Torn lines (a killed writer), lines that are not JSON and JSON lines that are not prediction
    records are skipped and counted, with one warning. Raises FileNotFoundError if there is no log.
    """
    path = Path(path)
    files = log_files(path) if backups else ([path] if path.is_file() else [])
    if not files:
        if path.exists():
            raise IsADirectoryError(f"prediction log {path} is not a file")
        raise FileNotFoundError(f"no prediction log at {path}")
    contents = LogContents(files=files)
    for file in files:
        with open(file, "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    contents.invalid += 1
                    continue
                if isinstance(record, dict) and all(k in record for k in REQUIRED_FIELDS):
                    contents.records.append(record)
                else:
                    contents.foreign += 1
    if contents.skipped:
        log.warning("%s: skipped %d line(s) that are not prediction records (%d torn or not JSON, %d foreign)",
                    path, contents.skipped, contents.invalid, contents.foreign)
    return contents
