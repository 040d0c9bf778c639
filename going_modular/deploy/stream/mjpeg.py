"""Motion JPEG: cutting a byte stream of concatenated JPEGs (as `ffmpeg -f mjpeg` writes) into frames,
incrementally and safely (a damaged or oversized frame costs only itself)."""
from __future__ import annotations

from typing import BinaryIO, Iterator

from going_modular.deploy.image import InvalidImageError

RESTART_MARKERS = range(0xD0, 0xD8)  # RST0..RST7: no payload, may appear inside scan data
SOI = b"\xff\xd8\xff"  # start of image, always followed by the first segment's marker
# Markers followed by a length and a payload: SOFn/DHT/DAC, SOS, DQT, DNL, DRI, DHP, EXP, APPn, COM.
SEGMENT_MARKERS = frozenset([*range(0xC0, 0xD0), *range(0xDA, 0xF0), 0xFE])
# APPn and COM payloads may hold whole JPEGs (EXIF thumbnails); other payloads never contain an SOI.
EMBEDDING_MARKERS = frozenset([*range(0xE0, 0xF0), 0xFE])
MAX_FRAME_MB = 32  # a 4K MJPEG frame is 1-3 MB; a 48 MP phone photo ~15 MB
MAX_FRAME_BYTES = MAX_FRAME_MB * 1_000_000


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
