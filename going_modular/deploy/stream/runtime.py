"""Streaming's runtime: frames from a source, paced, through a bounded queue to the model; one JSON
record per frame (a prediction, an error or a drop). `python -m going_modular.deploy.stream`
(stream/__main__.py) is its command line.
"""
from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from going_modular.deploy.errors import UserError
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError
from going_modular.deploy.monitor.log import PredictionLog, prediction_record
from going_modular.deploy.monitor.stats import predict_batch_with_stats
from going_modular.deploy.predictor import Predictor
from going_modular.deploy.stream.mjpeg import MAX_FRAME_BYTES, FrameTooLarge, iter_mjpeg

MJPEG_SUFFIXES = (".mjpeg", ".mjpg")


class StreamError(UserError, RuntimeError):
    """The stream source cannot be used; the message says why."""


@dataclass
class Frame:
    index: int
    data: bytes | InvalidImageError  # the encoded image, or why the source could not cut it out (FrameTooLarge)
    timestamp: float  # seconds since the stream started, when the frame was captured


@dataclass
class StreamStats:
    produced: int = 0
    processed: int = 0  # predictions made (including frames that turned out unreadable)
    dropped: int = 0
    errors: int = 0
    seconds: float = 0.0
    fps: float = 0.0  # sustained: processed frames per second of wall time
    mean_latency: float = 0.0  # capture -> prediction written, seconds
    max_queue_depth: int = 0
    interrupted: bool = False


class FrameQueue:
    """Bounded FIFO between the producer and the model.

    put(block=False) never waits: when the queue is full the oldest waiting frame is removed
    and returned (the caller records the drop). put(block=True) waits for room instead.
    get() returns None once the queue is closed and empty.
    """

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"queue size must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.max_depth = 0
        self._items: deque = deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item, block: bool = False):
        with self._cond:
            dropped = None
            while block and len(self._items) >= self.maxsize and not self._closed:
                self._cond.wait()
            if self._closed:
                return item  # shutting down: nobody will consume it
            if len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
            self._items.append(item)
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()
            return dropped

    def get(self):
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def natural_key(path: Path) -> list:
    """frame_2.jpg before frame_10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def iter_frame_dir(folder: Path, max_frame_bytes: int = MAX_FRAME_BYTES) -> Iterator:
    """The image files of a folder, in natural name order, as encoded bytes (read lazily; the
    folder is listed now so an empty one fails before the model is loaded); a file over the
    frame size limit is a FrameTooLarge, never read."""
    frames = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                    key=natural_key)
    if not frames:
        raise StreamError(f"no frames found in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return (FrameTooLarge(max_frame_bytes) if path.stat().st_size > max_frame_bytes else path.read_bytes()
            for path in frames)


def open_source(source: str, max_frame_bytes: int = MAX_FRAME_BYTES) -> Iterator:
    """Frames of `source`: '-' (MJPEG on stdin), a folder of frames, or a .mjpeg/.mjpg file."""
    if source == "-":
        return iter_mjpeg(sys.stdin.buffer, max_frame_bytes=max_frame_bytes)
    path = Path(source)
    if path.is_dir():
        return iter_frame_dir(path, max_frame_bytes)
    if not path.is_file():
        raise StreamError(f"source not found: {source}")
    if path.suffix.lower() in MJPEG_SUFFIXES:
        return _iter_mjpeg_file(path, max_frame_bytes)
    raise StreamError(f"cannot decode {path.name}: sources are a folder of frames, a Motion JPEG file "
                      f"({', '.join(MJPEG_SUFFIXES)}) or '-' for MJPEG on stdin. Convert a video with "
                      f"`ffmpeg -i {path.name} -q:v 3 -f mjpeg {path.stem}.mjpeg`.")


def _iter_mjpeg_file(path: Path, max_frame_bytes: int) -> Iterator:
    with open(path, "rb") as f:
        yield from iter_mjpeg(f, max_frame_bytes=max_frame_bytes)


def produce(frames: Iterable[bytes | InvalidImageError], queue: FrameQueue, fps: float, drop: bool, start: float,
            stats: StreamStats, sink: Callable[[dict], None], stop: threading.Event) -> None:
    """Producer thread: stamp each frame, pace it to `fps` (0 = as fast as the source gives
    them) and queue it; a frame pushed out of the full queue is recorded as dropped."""
    for index, data in enumerate(frames):
        if stop.is_set():
            break
        if fps > 0:
            time.sleep(max(0.0, start + index / fps - time.perf_counter()))
        frame = Frame(index, data, time.perf_counter() - start)
        stats.produced += 1
        dropped = queue.put(frame, block=not drop)
        if dropped is not None and not stop.is_set():
            stats.dropped += 1
            sink({"frame": dropped.index, "timestamp": round(dropped.timestamp, 4), "dropped": True})


def rounded(value):
    """Floats (also inside a dict) to 4 decimals: short JSON lines, and more digits mean nothing."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: rounded(v) for key, v in value.items()}
    return value


def predict_frame(predictor: Predictor, frame: Frame, start: float, top_k: int | None,
                  log: PredictionLog | None = None) -> dict:
    """The JSON record of one frame: its prediction (and the model that made it), or the reason it
    could not be read. With a prediction log, the prediction is also logged there (id: frame index)."""
    record = {"frame": frame.index, "timestamp": round(frame.timestamp, 4)}
    try:
        if isinstance(frame.data, InvalidImageError):  # the source could not cut this frame out (FrameTooLarge)
            raise frame.data
        if log is None:
            result, stats = predictor.predict(frame.data, top_k=top_k), None
        else:  # the statistics come from the pixels this prediction decodes anyway
            [(result, stats)] = predict_batch_with_stats(predictor, [frame.data], top_k)
        record.update({key: rounded(value) for key, value in result.items()})  # every key the predictor reports
        record.update(model_id=predictor.model_id, precision=predictor.precision)
    except InvalidImageError as e:
        record["error"] = str(e)
        result = None
    record["latency"] = round(time.perf_counter() - start - frame.timestamp, 4)
    if log is not None and result is not None:
        log.write(prediction_record(predictor, {**result, "seconds": record["latency"]}, stats, mode="stream",
                                    id=frame.index))
    return record


def run_stream(predictor: Predictor, frames: Iterable[bytes | InvalidImageError], sink: Callable[[dict], None],
               fps: float = 30.0, queue_size: int = 4, drop: bool = True, top_k: int | None = 3,
               log: PredictionLog | None = None) -> StreamStats:
    """Classify `frames` (any iterable of encoded images, e.g. a camera generator) as they arrive.

    `sink` gets one dict per frame, from two threads (predictions from this one, drops from the
    producer): it must be thread-safe, as `list.append` and `JsonLinesWriter` are. On a normal
    end processed + dropped == produced.
    """
    queue = FrameQueue(queue_size)
    stats, stop, failure = StreamStats(), threading.Event(), []
    start = time.perf_counter()

    def producer():
        try:
            produce(frames, queue, fps, drop, start, stats, sink, stop)
        except BaseException as e:  # re-raised in the caller's thread below
            failure.append(e)
        finally:
            queue.close()

    thread = threading.Thread(target=producer, name="frame-producer", daemon=True)
    thread.start()
    latency = 0.0
    try:
        while (frame := queue.get()) is not None:
            record = predict_frame(predictor, frame, start, top_k, log)
            sink(record)
            stats.processed += 1
            stats.errors += "error" in record
            latency += record["latency"]
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stop.set()
        queue.close()
        thread.join(timeout=2)  # it may be blocked reading a pipe; it is a daemon thread
    if failure:
        raise failure[0]
    stats.seconds = round(time.perf_counter() - start, 3)
    stats.fps = round(stats.processed / max(stats.seconds, 1e-9), 2)
    stats.mean_latency = round(latency / max(stats.processed, 1), 4)
    stats.max_queue_depth = queue.max_depth
    return stats


class JsonLinesWriter:
    """Thread-safe sink writing one JSON object per line, flushed at once for live readers."""

    def __init__(self, file):
        self.file = file
        self.lock = threading.Lock()

    def __call__(self, record: dict) -> None:
        with self.lock:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()


