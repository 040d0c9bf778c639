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
`--source redis://HOST:PORT/DB` and `python -m going_modular.deploy.stream publish`, in
deploy/redis_stream.py.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from going_modular.deploy import cli
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError
from going_modular.deploy.predictor import Predicting, add_model_args, predictor_from_args

MJPEG_SUFFIXES = (".mjpeg", ".mjpg")
RESTART_MARKERS = range(0xD0, 0xD8)  # RST0..RST7: no payload, may appear inside scan data
SOI = b"\xff\xd8\xff"  # start of image, always followed by the first segment's marker
# Markers followed by a length and a payload: SOFn/DHT/DAC, SOS, DQT, DNL, DRI, DHP, EXP, APPn, COM.
SEGMENT_MARKERS = frozenset([*range(0xC0, 0xD0), *range(0xDA, 0xF0), 0xFE])
# APPn and COM payloads may hold whole JPEGs (EXIF thumbnails); other payloads never contain an SOI.
EMBEDDING_MARKERS = frozenset([*range(0xE0, 0xF0), 0xFE])
MAX_FRAME_MB = 32  # a 4K MJPEG frame is 1-3 MB; a 48 MP phone photo ~15 MB
MAX_FRAME_BYTES = MAX_FRAME_MB * 1_000_000


class StreamError(RuntimeError):
    """The stream source cannot be used; the message says why."""


@dataclass
class Frame:
    index: int
    data: bytes
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


class FrameTooLarge(InvalidImageError):
    """A frame over the size limit: reported in its place, never buffered whole."""

    def __init__(self, limit_bytes: int):
        super().__init__(f"Frame larger than the {limit_bytes / 1e6:g} MB limit (--max-frame-mb): skipped.")


class MjpegSplitter:
    """Cuts a Motion JPEG byte stream (concatenated JPEGs, as `ffmpeg -f mjpeg` writes) into frames,
    incrementally: `feed` it bytes as they arrive, it returns the frames they complete.

    It walks each frame's marker segments, skipping their payloads (so the EOI of an embedded EXIF
    thumbnail is not taken for the end), and scans entropy-coded data for the next real marker. A
    frame that stops looking like a JPEG (cut off, bit-flipped, a length that points past the next
    marker) is cut at the next start of image, never after it: a damaged frame costs only itself.
    A frame growing past `max_frame_bytes` becomes one FrameTooLarge and is discarded as it arrives
    until the next start of image, so the buffer never holds more than that limit plus one read.
    """

    SEEK, PARSE, RESYNC, SKIP = "seek", "parse", "resync", "skip"

    def __init__(self, max_frame_bytes: int):
        self.max_frame_bytes = max_frame_bytes
        self.buf = bytearray()  # from the current frame's SOI on (in SKIP mode: what is left to search)
        self.mode = self.SEEK
        self.pos = 0  # where parsing (PARSE) or the search for the next SOI (RESYNC, SKIP) resumes
        self.in_scan = False

    def feed(self, chunk: bytes) -> list:
        self.buf += chunk
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def finish(self) -> list:
        """At the end of the stream: a frame cut off by it is still handed over (it is then
        reported as a damaged frame)."""
        return [bytes(self.buf)] if self.mode in (self.PARSE, self.RESYNC) else []

    def _next(self):
        """The next complete frame (bytes) or FrameTooLarge, or None until more data arrives."""
        while True:
            if self.mode == self.SEEK:
                start = self.buf.find(SOI)
                if start < 0:  # bytes between frames are not a frame: dropped (the last two may begin an SOI)
                    del self.buf[:-2]
                    return None
                del self.buf[:start]
                self.mode, self.pos, self.in_scan = self.PARSE, 2, False
            if self.mode == self.PARSE:
                end = self._parse()
                if end is not None:
                    frame = bytes(self.buf[:end])
                    del self.buf[:end]
                    self.mode = self.SEEK
                    return frame
            if self.mode in (self.RESYNC, self.SKIP):
                start = self.buf.find(SOI, self.pos)
                if start >= 0:  # the damaged (or skipped) frame ends where the next one starts
                    frame = bytes(self.buf[:start]) if self.mode == self.RESYNC else None
                    del self.buf[:start]
                    self.mode = self.SEEK
                    if frame is None:
                        continue
                    return frame
                self.pos = max(self.pos, len(self.buf) - 2)
            if self.mode == self.SKIP:
                del self.buf[:self.pos]
                self.pos = 0
                return None
            if len(self.buf) > self.max_frame_bytes:
                self.mode = self.SKIP
                return FrameTooLarge(self.max_frame_bytes)
            return None

    def _damaged(self, search_from: int) -> None:
        self.mode, self.pos = self.RESYNC, search_from

    def _parse(self) -> int | None:
        """Continue walking the frame from self.pos: the index just past its EOI, or None when more
        data is needed or the frame turned out damaged (then mode is RESYNC)."""
        buf, n, pos = self.buf, len(self.buf), self.pos
        while True:
            if self.in_scan:  # entropy-coded data runs until an 0xFF that is a marker
                pos = buf.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    self.pos = n if pos < 0 else pos
                    return None
                if buf[pos + 1] == 0x00 or buf[pos + 1] in RESTART_MARKERS:  # stuffed byte / restart
                    pos += 2
                    continue
                self.in_scan = False
            if pos + 2 > n:
                self.pos = pos
                return None
            marker = buf[pos + 1]
            if buf[pos] != 0xFF:
                return self._damaged(pos)
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            if marker == 0xD9:  # EOI
                return pos + 2
            if marker == 0x01 or marker in RESTART_MARKERS:  # markers without a length field
                pos += 2
                continue
            if marker not in SEGMENT_MARKERS:  # an SOI here: the next frame began before this one ended
                return self._damaged(pos)
            if pos + 4 > n:
                self.pos = pos
                return None
            end = pos + 2 + int.from_bytes(buf[pos + 2:pos + 4], "big")
            if end < pos + 4:
                return self._damaged(pos)
            if end + 1 > n:  # the whole segment (64 KB at most) and the byte after it
                self.pos = pos
                return None
            if marker not in EMBEDDING_MARKERS and buf.find(SOI, pos + 4, end) >= 0:
                return self._damaged(pos + 2)  # a table cut short: its length runs into the next frame
            if marker != 0xDA and buf[end] != 0xFF:
                return self._damaged(pos + 2)  # a wrong length: the next frame may start inside it
            pos = end
            self.in_scan = marker == 0xDA  # start of scan: entropy-coded data follows its header


def iter_mjpeg(stream: BinaryIO, chunk_size: int = 1 << 20, max_frame_bytes: int = MAX_FRAME_BYTES) -> Iterator:
    """The frames of a Motion JPEG stream (see MjpegSplitter), read incrementally, so it works on
    pipes and on files of any length."""
    splitter = MjpegSplitter(max_frame_bytes)
    while chunk := stream.read1(chunk_size):  # whatever has arrived: a live pipe must not wait for a full chunk
        yield from splitter.feed(chunk)
    yield from splitter.finish()


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


def produce(frames: Iterable[bytes], queue: FrameQueue, fps: float, drop: bool, start: float,
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


def predict_frame(predictor: Predicting, frame: Frame, start: float, top_k: int | None) -> dict:
    """The JSON record of one frame: its prediction, or the reason it could not be read."""
    record = {"frame": frame.index, "timestamp": round(frame.timestamp, 4)}
    try:
        if isinstance(frame.data, InvalidImageError):  # the source could not cut this frame out (FrameTooLarge)
            raise frame.data
        result = predictor.predict(frame.data, top_k=top_k)
        record.update({key: rounded(value) for key, value in result.items()})  # every key the predictor reports
    except InvalidImageError as e:
        record["error"] = str(e)
    record["latency"] = round(time.perf_counter() - start - frame.timestamp, 4)
    return record


def run_stream(predictor: Predicting, frames: Iterable[bytes], sink: Callable[[dict], None], fps: float = 30.0,
               queue_size: int = 4, drop: bool = True, top_k: int | None = 3) -> StreamStats:
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
            record = predict_frame(predictor, frame, start, top_k)
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


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="folder of frames, .mjpeg/.mjpg file, '-' for stdin, or redis://HOST:PORT/DB for an "
                             "event stream (`--source redis://... --help`; deploy/redis_stream.py)")
    parser.add_argument("--output", default="-", help="JSON lines file ('-' = stdout)")
    parser.add_argument("--fps", type=float, default=30.0, help="source frame rate to replay at (0 = unpaced)")
    parser.add_argument("--queue-size", type=int, default=4, help="frames that may wait for the model")
    parser.add_argument("--block", action="store_true", help="wait for the model instead of dropping frames")
    parser.add_argument("--top-k", type=int, default=3, help="probabilities kept per frame")
    parser.add_argument("--max-frame-mb", type=float, default=MAX_FRAME_MB,
                        help="a bigger frame becomes one error line and is skipped, never buffered whole")
    add_model_args(parser)
    return parser


def main(argv=None) -> int:
    # --- Redis Streams event source (deploy/redis_stream.py): `--source redis://...` and `publish` ---
    argv = sys.argv[1:] if argv is None else list(argv)
    from going_modular.deploy import redis_stream

    if redis_stream.handles(argv):
        return redis_stream.main(argv)
    # --- end of the Redis hook ---
    args = get_args_parser().parse_args(argv)
    if args.fps < 0 or args.queue_size < 1 or args.top_k < 1 or args.max_frame_mb <= 0:
        raise ValueError("--fps must be >= 0, --queue-size and --top-k >= 1, --max-frame-mb > 0")
    frames = open_source(args.source, int(args.max_frame_mb * 1_000_000))
    predictor = predictor_from_args(args)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        stats = run_stream(predictor, frames, JsonLinesWriter(out), fps=args.fps,
                           queue_size=args.queue_size, drop=not args.block, top_k=args.top_k)
    finally:
        if out is not sys.stdout:
            out.close()
    if not stats.produced:
        raise StreamError(f"no JPEG frames found in {args.source}")
    print(f"{'interrupted: ' if stats.interrupted else ''}processed {stats.processed}/{stats.produced} frames "
          f"({stats.dropped} dropped, {stats.errors} unreadable) in {stats.seconds:.1f} s: "
          f"sustained {stats.fps:.1f} FPS, mean latency {stats.mean_latency * 1000:.0f} ms", file=sys.stderr)
    return 130 if stats.interrupted else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
