"""Event streaming on Redis Streams: a consumer group that scales out and loses nothing.

    python -m going_modular.deploy.stream publish --to redis://127.0.0.1:6379/0 --stream foodvision:photos photos/
    python -m going_modular.deploy.stream --source redis://127.0.0.1:6379/0 --input-stream foodvision:photos \\
        --group foodvision --consumer worker-1 --output-stream foodvision:predictions --create-group

A message on the input stream carries the photo's bytes (field `image`, at most --max-frame-mb) or a
`uri` the consumer reads (a path, or any URI pyarrow reads: s3://, gs://, file://), plus an optional
`id` (`publish` sets it to the file's path relative to the folder it publishes). Each message gets one
entry on the output stream with the fields `source_id` (the input message's stream id), `id`,
`label`, `prob`, `known`, `ood_score`, `model_id` (bundle.model_id) and `error` (empty when none).

What a consumer guarantees (any number of them, processes or machines, may share the group):
- At-least-once delivery, exactly-once results in effect: messages are read with XREADGROUP and
  scored with the same `predict_batch` every mode calls; each result is written to the output stream
  and its message acknowledged (XACK) in one Lua script, which runs atomically, and only while the
  message is still pending on this consumer. A crash before the script leaves the message pending (it
  is delivered again); a crash after it lost nothing; a commit retried after a lost reply, or a slow
  consumer whose message another one has taken over, writes nothing twice. The output still carries
  `source_id`, so a reader can dedupe whatever the producer side did.
- Crashes: on start a consumer first finishes what is still pending on its own name; a reclaimer
  (XAUTOCLAIM) takes over messages that stayed unacknowledged on any consumer for --claim-idle-ms.
  A message that comes back this way is scored alone, so a message that kills its consumer costs
  only its own deliveries; once it has been delivered --max-deliveries times without an ack it goes
  to the dead-letter stream (INPUT:dead: its fields, `source_id`, `deliveries`, `reason`) and is
  acknowledged. An unreadable image (corrupt, not an image, too large, no `image`/`uri`) is an
  ordinary result with `error` filled in at once, never retried.
- SIGTERM (and Ctrl-C) finishes the messages in hand, commits them and exits (0; 130 for Ctrl-C).
- Bounded: a consumer holds at most --max-in-flight unacknowledged messages.
- Redis going away is one line on stderr, then retries with exponential backoff and jitter (up to
  --retry-max-s apart) and one line when it is back; the results in hand are committed then.
  Messages survive a Redis restart when Redis persists them (appendonly yes).

Streams grow until trimmed: XTRIM the input and output streams to your retention. The Lua script
touches the input and the output stream, so on a Redis Cluster both names need the same hash tag
(`{foodvision}:photos`, `{foodvision}:predictions`).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from going_modular.deploy import cli
from going_modular.deploy.bundle import model_id
from going_modular.deploy.errors import UserError
from going_modular.deploy.monitor.log import PredictionLog, prediction_record
from going_modular.deploy.predictor import add_model_args, predictor_from_args
from going_modular.deploy.scoring import find_images, one_line, score_sources
from going_modular.deploy.stream.mjpeg import MAX_FRAME_MB

SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_INPUT, DEFAULT_OUTPUT, DEFAULT_GROUP = "foodvision:photos", "foodvision:predictions", "foodvision"
DEAD_SUFFIX = ":dead"
OUTPUT_FIELDS = ("source_id", "id", "label", "prob", "known", "ood_score", "model_id", "error")
BLOCK_MS = 1000  # an idle XREADGROUP waits this long: how soon an idle consumer notices SIGTERM
RETRY_FIRST_S = 0.1
PUBLISH_CHUNK = 32  # messages per pipelined round trip when publishing
REDIS_HINT = "pip install redis==8.2.0 (or `pip install .[stream]`)"

# KEYS[1] input stream, KEYS[2] the stream to write to (output or dead letter); ARGV: group, consumer,
# then per message: its id, its field count n, n field/value pairs. Written and acknowledged only if
# the message is still pending on this consumer: after a reclaim, only the new owner's result counts.
# Returns the ids written.
COMMIT_LUA = """
local group, consumer = ARGV[1], ARGV[2]
local i, written = 3, {}
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 2, i + 1 + 2 * n))
    redis.call('XACK', KEYS[1], group, id)
    written[#written + 1] = id
  end
  i = i + 2 + 2 * n
end
return written
"""


class RedisStreamError(UserError):
    """The Redis event stream cannot be used (no client library, no such group...); the message says why."""


class Stopped(Exception):
    """A stop was asked for while Redis was unreachable: the messages in hand stay pending."""


def is_redis_url(source: str) -> bool:
    return source.startswith(SCHEMES)


def handles(argv: list[str]) -> bool:
    """Whether a `deploy.stream` command line is this module's: `publish ...` or `--source redis://...`."""
    if argv[:1] == ["publish"]:
        return True
    for i, arg in enumerate(argv):
        if arg == "--source" and i + 1 < len(argv):
            return is_redis_url(argv[i + 1])
        if arg.startswith("--source="):
            return is_redis_url(arg.split("=", 1)[1])
    return False


def connect(url: str, block_ms: int = BLOCK_MS):
    """A client for `url` with the library's own retries off: this module retries, and says so."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as e:
        raise RedisStreamError(f"the Redis event stream needs the Redis client: {REDIS_HINT}") from e
    if not is_redis_url(url):
        raise RedisStreamError(f"not a Redis URL: {url} (expected redis://HOST:PORT/DB)")
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=block_ms / 1000 + 10,
                                    retry=Retry(NoBackoff(), 0))
    except ValueError as e:
        raise RedisStreamError(f"bad Redis URL {url}: {e}") from e


def text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def too_large(limit_bytes: int) -> str:
    return f"Image larger than the {limit_bytes / 1e6:g} MB limit (--max-frame-mb): skipped."


def read_uri(uri: str, max_bytes: int) -> bytes | str:
    """The bytes behind a message's `uri` (a path, or a URI pyarrow reads), or why they cannot be
    read, in words and without the machine's paths. Reads at most max_bytes + 1 bytes."""
    if "://" in uri:
        try:
            from pyarrow import fs
        except ImportError:
            return "Reading a 'uri' other than a path needs pyarrow (pip install pyarrow)."
        try:
            filesystem, path = fs.FileSystem.from_uri(uri)
            with filesystem.open_input_stream(path) as f:
                data = f.read(max_bytes + 1)
        except (OSError, ValueError) as e:  # ArrowInvalid (a ValueError): a bad URI
            return f"The file cannot be read: {type(e).__name__}."  # pyarrow's messages name the path
    else:
        try:
            with open(uri, "rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as e:
            return f"The file cannot be read: {e.strerror or type(e).__name__}."
    if len(data) > max_bytes:
        return too_large(max_bytes)
    return data or "The file is empty."


def message_source(fields: dict | None, max_bytes: int) -> bytes | str:
    """What a message asks to score: the image's bytes, or (a str) why it cannot be scored."""
    if not fields:
        return "The message was deleted from the stream before it was scored."
    if b"image" in fields:
        image = fields[b"image"]
        return too_large(max_bytes) if len(image) > max_bytes else bytes(image)
    if fields.get(b"uri"):
        return read_uri(text(fields[b"uri"]), max_bytes)
    return "The message has neither an 'image' nor a 'uri' field."


def result_fields(source_id: str, fields: dict | None, result: dict, model: str) -> dict:
    """One output entry (OUTPUT_FIELDS, all strings) from a prediction or {"error": message}."""
    entry = dict.fromkeys(OUTPUT_FIELDS, "")
    entry.update(source_id=source_id, id=text((fields or {}).get(b"id", b"")), model_id=model)
    if result.get("error"):
        entry["error"] = result["error"]
        return entry
    known = result.get("known")
    entry.update(label=result["label"], prob=f"{result['prob']:.4f}",
                 known="" if known is None else str(bool(known)).lower(),
                 ood_score="" if result.get("ood_score") is None else f"{result['ood_score']:.4f}")
    return entry


@dataclass
class ConsumerConfig:
    input_stream: str = DEFAULT_INPUT
    group: str = DEFAULT_GROUP
    consumer: str = ""
    output_stream: str = DEFAULT_OUTPUT
    dead_stream: str = ""  # default: INPUT:dead
    create_group: bool = False
    batch_size: int = 8
    max_in_flight: int = 16
    claim_idle_ms: int = 30_000
    max_deliveries: int = 3
    max_image_bytes: int = MAX_FRAME_MB * 1_000_000
    retry_max_s: float = 5.0
    block_ms: int = BLOCK_MS
    until_drained: bool = False

    def __post_init__(self):
        self.consumer = self.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_stream = self.dead_stream or self.input_stream + DEAD_SUFFIX
        if self.batch_size < 1 or self.max_in_flight < self.batch_size:
            raise ValueError("--batch-size must be >= 1 and --max-in-flight >= --batch-size")
        if self.claim_idle_ms < 1 or self.max_deliveries < 1 or self.max_image_bytes < 1 or self.retry_max_s <= 0:
            raise ValueError("--claim-idle-ms, --max-deliveries, --max-frame-mb and --retry-max-s must be positive")


@dataclass
class ConsumerStats:
    results: int = 0  # output entries written (errors included)
    errors: int = 0
    dead: int = 0
    reclaimed: int = 0  # messages taken over from other consumers (or from an earlier run of this one)
    superseded: int = 0  # scored here, but another consumer had taken the message over: not written
    seconds: float = 0.0


class Consumer:
    """One member of a consumer group: reads, scores with `predictor.predict_batch`, commits (module
    docstring). `run(stop)` returns when `stop` is set (or, with until_drained, when the group has
    nothing new and nothing pending)."""

    def __init__(self, client, predictor, model: str, config: ConsumerConfig,
                 log: Callable[[str], None] | None = None):
        import redis

        self.client, self.predictor, self.model, self.cfg = client, predictor, model, config
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.stats = ConsumerStats()
        self.commit_script = client.register_script(COMMIT_LUA)  # EVALSHA, reloaded after a Redis restart
        self.unreachable = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError (restarting) is one
        self.response_error = redis.ResponseError
        self.down_since: float | None = None
        self.stop = threading.Event()
        self.prediction_log: PredictionLog | None = None  # --prediction-log: one record per committed result

    # --- talking to Redis through outages ---------------------------------------------------------

    def call(self, fn: Callable):
        """fn() until Redis answers: one line when it goes away, backoff with jitter, one line when back."""
        attempt = 0
        while True:
            try:
                result = fn()
            except self.unreachable as e:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    self.log(f"Redis unreachable ({one_line(e) or type(e).__name__}); retrying with backoff "
                             f"(up to {self.cfg.retry_max_s:g} s apart) until it is back")
                delay = min(self.cfg.retry_max_s, RETRY_FIRST_S * 2 ** attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                if self.stop.wait(delay):
                    raise Stopped() from None
                continue
            if self.down_since is not None:
                self.log(f"Redis is back after {time.monotonic() - self.down_since:.1f} s; resuming")
                self.down_since = None
            return result

    def ensure_group(self) -> None:
        cfg = self.cfg
        if cfg.create_group:
            try:  # from the stream's start: photos published before the group existed are scored too
                self.call(lambda: self.client.xgroup_create(cfg.input_stream, cfg.group, id="0", mkstream=True))
            except self.response_error as e:  # BUSYGROUP: it exists already, fine
                if "BUSYGROUP" not in str(e):
                    raise RedisStreamError(f"cannot create group {cfg.group!r} on {cfg.input_stream!r}: "
                                           f"{one_line(e)}") from e
            return
        try:
            groups = self.call(lambda: self.client.xinfo_groups(cfg.input_stream))
        except self.response_error:
            groups = []
        if not any(text(g["name"]) == cfg.group for g in groups):
            raise RedisStreamError(f"stream {cfg.input_stream!r} has no consumer group {cfg.group!r}; "
                                   f"pass --create-group to create it")

    def read(self, start: str, count: int, block: int | None):
        """XREADGROUP: [(id, fields)] from `start` ('>' = new messages, an id = own pending after it)."""
        cfg = self.cfg
        try:
            reply = self.call(lambda: self.client.xreadgroup(cfg.group, cfg.consumer, {cfg.input_stream: start},
                                                             count=count, block=block))
        except self.response_error as e:
            if "NOGROUP" not in str(e):
                raise RedisStreamError(f"cannot read {cfg.input_stream!r} as group {cfg.group!r}: "
                                       f"{one_line(e)}") from e
            if not cfg.create_group:
                raise RedisStreamError(f"group {cfg.group!r} of {cfg.input_stream!r} is gone (a Redis restarted "
                                       f"without persistence loses its groups); --create-group re-creates "
                                       f"it") from e
            self.log(f"group {cfg.group!r} is gone (Redis lost its data?); re-creating it")
            self.ensure_group()
            return []
        return [(text(mid), fields) for _, entries in reply or [] for mid, fields in entries]

    def commit(self, stream: str, entries: list[tuple[str, dict]]) -> set[str]:
        """Write each (source id, fields) to `stream` and XACK its message, atomically; returns the ids
        written (a message no longer pending on this consumer is skipped)."""
        args = [self.cfg.group, self.cfg.consumer]
        for source_id, fields in entries:
            args += [source_id, len(fields)]
            for key, value in fields.items():
                args += [key, value]
        return {text(mid) for mid in self.call(lambda: self.commit_script(keys=[self.cfg.input_stream, stream],
                                                                          args=args))}

    # --- scoring ------------------------------------------------------------------------------------

    def score(self, messages: list[tuple[str, dict]]) -> None:
        """Score messages in batches of --batch-size (one predict_batch each) and commit each batch."""
        for i in range(0, len(messages), self.cfg.batch_size):
            chunk = messages[i:i + self.cfg.batch_size]
            sources = [message_source(fields, self.cfg.max_image_bytes) for _, fields in chunk]
            results = score_sources(self.predictor, sources, stats=self.prediction_log is not None)
            entries = [(mid, result_fields(mid, fields, result, self.model))
                       for (mid, fields), result in zip(chunk, results, strict=True)]
            written = self.commit(self.cfg.output_stream, entries)
            if self.prediction_log is not None:  # what was committed: a superseded result was logged by its winner
                for (mid, _), result in zip(chunk, results, strict=True):
                    if mid in written and not result.get("error"):
                        self.prediction_log.write(prediction_record(self.predictor, result, result.get("image"),
                                                                    mode="events", id=mid))
            self.stats.results += len(written)
            self.stats.superseded += len(entries) - len(written)
            self.stats.errors += sum(bool(e["error"]) for mid, e in entries if mid in written)

    def score_returning(self, mid: str, fields: dict | None) -> None:
        """A message delivered before and never acknowledged: dead-lettered once it has been delivered
        more than --max-deliveries times, else scored alone (if it is what kills consumers, it takes
        no batch-mates' delivery counts with it)."""
        cfg = self.cfg
        pending = self.call(lambda: self.client.xpending_range(cfg.input_stream, cfg.group, mid, mid, 1))
        if not pending or text(pending[0]["consumer"]) != cfg.consumer:
            return  # acknowledged or taken over meanwhile
        deliveries = int(pending[0]["times_delivered"]) - 1  # this delivery is not tried: count the earlier ones
        if deliveries >= cfg.max_deliveries:
            reason = (f"delivered {deliveries} times without an acknowledgement (--max-deliveries "
                      f"{cfg.max_deliveries}): each consumer holding it died or hung; not tried again")
            dead = {**(fields or {}), "source_id": mid, "deliveries": str(deliveries), "reason": reason}
            if self.commit(cfg.dead_stream, [(mid, dead)]):
                self.stats.dead += 1
                self.log(f"dead-lettered {mid} to {cfg.dead_stream}: {reason}")
            return
        self.score([(mid, fields)])

    # --- the loop ------------------------------------------------------------------------------------

    def finish_own_pending(self) -> None:
        """What an earlier run under this consumer name read and never acknowledged, one at a time."""
        cursor = "0"
        while not self.stop.is_set():
            messages = self.read(cursor, 1, None)
            if not messages:
                return
            cursor = messages[-1][0]
            self.stats.reclaimed += 1
            self.score_returning(*messages[-1])

    def reclaim(self) -> None:
        """XAUTOCLAIM, one message at a time, what sat unacknowledged on any consumer for --claim-idle-ms."""
        cfg, cursor = self.cfg, "0-0"
        while not self.stop.is_set():
            reply = self.call(lambda c=cursor: self.client.xautoclaim(cfg.input_stream, cfg.group, cfg.consumer,
                                                                      cfg.claim_idle_ms, c, count=1))
            cursor, claimed = text(reply[0]), reply[1]
            if len(reply) > 2 and reply[2]:  # deleted from the stream (XTRIM, XDEL) before anyone scored them
                self.log(f"{len(reply[2])} pending message(s) were deleted from {cfg.input_stream} unscored")
            for mid, fields in claimed:
                self.stats.reclaimed += 1
                self.score_returning(text(mid), fields)
            if cursor == "0-0":
                return

    def drained(self) -> bool:
        summary = self.call(lambda: self.client.xpending(self.cfg.input_stream, self.cfg.group))
        return not summary["pending"]

    def run(self, stop: threading.Event | None = None) -> ConsumerStats:
        if stop is not None:
            self.stop = stop
        start = time.perf_counter()
        try:
            self.ensure_group()
            self.finish_own_pending()
            next_claim = 0.0
            while not self.stop.is_set():
                if time.monotonic() >= next_claim:
                    self.reclaim()
                    next_claim = time.monotonic() + max(self.cfg.claim_idle_ms / 2000, 0.05)
                messages = self.read(">", self.cfg.max_in_flight, self.cfg.block_ms)
                if messages:
                    self.score(messages)
                elif self.cfg.until_drained and self.drained():
                    break
        except Stopped:
            self.log("stopped while Redis was unreachable: any messages in hand stay pending and are "
                     "delivered again")
        self.stats.seconds = round(time.perf_counter() - start, 3)
        return self.stats


# --- publishing ---------------------------------------------------------------------------------------

def publish(client, stream: str, paths: list[str | os.PathLike], as_uri: bool = False) -> list[str]:
    """One message per image file under `paths` (folders searched recursively, or single files):
    {"id": the path relative to the folder given (a file: its name), "image": its bytes} or, with
    as_uri, {"id", "uri": its absolute path}. Returns the message ids, in order."""
    items = []
    for path in map(Path, paths):
        if path.is_file():
            items.append((path.name, path))
        else:
            items += [(p.relative_to(path).as_posix(), p) for p in find_images(path)]
    ids = []
    for i in range(0, len(items), PUBLISH_CHUNK):
        pipe = client.pipeline(transaction=False)
        for name, path in items[i:i + PUBLISH_CHUNK]:
            body = {"uri": str(path.resolve())} if as_uri else {"image": path.read_bytes()}
            pipe.xadd(stream, {"id": name, **body})
        ids += [text(mid) for mid in pipe.execute()]
    return ids


def read_results(client, stream: str = DEFAULT_OUTPUT) -> dict[str, dict[str, str]]:
    """The output stream as {source_id: entry (str fields)}, deduplicated by source id (first wins)."""
    results: dict[str, dict[str, str]] = {}
    for _, fields in client.xrange(stream):
        entry = {text(k): text(v) for k, v in fields.items()}
        results.setdefault(entry["source_id"], entry)
    return results


# --- command line -------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m going_modular.deploy.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="redis://HOST:PORT/DB (rediss:// for TLS)")
    parser.add_argument("--input-stream", default=DEFAULT_INPUT, help="the stream of photo messages")
    parser.add_argument("--group", default=DEFAULT_GROUP, help="consumer group (every consumer of it shares the work)")
    parser.add_argument("--consumer", default="",
                        help="this consumer's name, stable across restarts (a restart finishes its own pending "
                             "messages first); default HOSTNAME-PID")
    parser.add_argument("--output-stream", default=DEFAULT_OUTPUT, help="where results are written")
    parser.add_argument("--dead-letter-stream", default="", help=f"default: INPUT-STREAM{DEAD_SUFFIX}")
    parser.add_argument("--create-group", action="store_true", help="create the group (and stream) if missing")
    parser.add_argument("--batch-size", type=int, default=8, help="messages per predict_batch call")
    parser.add_argument("--max-in-flight", type=int, default=16,
                        help="most messages this consumer holds unacknowledged (one read)")
    parser.add_argument("--claim-idle-ms", type=int, default=30_000,
                        help="take over a message another consumer left unacknowledged this long")
    parser.add_argument("--max-deliveries", type=int, default=3,
                        help="deliveries without an ack before a message goes to the dead-letter stream")
    parser.add_argument("--max-frame-mb", type=float, default=MAX_FRAME_MB,
                        help="a bigger image (or uri file) is an error result, never decoded")
    parser.add_argument("--retry-max-s", type=float, default=5.0, help="longest wait between retries while "
                        "Redis is unreachable")
    parser.add_argument("--prediction-log", default=None, metavar="PATH",
                        help="also append one JSON line per prediction to this monitoring log (monitor/log.py; "
                             "id: the input message id); default: off")
    parser.add_argument("--until-drained", action="store_true",
                        help="exit once the group has nothing new and nothing pending (a one-off drain)")
    add_model_args(parser)
    return parser


def get_publish_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m going_modular.deploy.stream publish",
                                     description="Publish one message per image file to a Redis stream.")
    parser.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--to", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--stream", default=DEFAULT_INPUT, help="the input stream")
    parser.add_argument("--as-uri", action="store_true",
                        help="send each file's absolute path (field uri) instead of its bytes: for consumers "
                             "that share the filesystem")
    return parser


def publish_main(argv: list[str]) -> int:
    args = get_publish_parser().parse_args(argv)
    client = connect(args.to)
    import redis

    try:
        ids = publish(client, args.stream, args.paths, as_uri=args.as_uri)
    except redis.RedisError as e:  # unreachable, or the stream's name holds something else (WRONGTYPE)
        raise RedisStreamError(f"cannot publish to {args.stream} on {args.to}: {one_line(e)}") from e
    print(f"published {len(ids)} messages to {args.stream} ({ids[0]} .. {ids[-1]})" if ids else "published nothing")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["publish"]:
        return publish_main(argv[1:])
    args = get_args_parser().parse_args(argv)
    if args.max_frame_mb <= 0:
        raise ValueError("--max-frame-mb must be > 0")
    config = ConsumerConfig(args.input_stream, args.group, args.consumer, args.output_stream, args.dead_letter_stream,
                            args.create_group, args.batch_size, args.max_in_flight, args.claim_idle_ms,
                            args.max_deliveries, int(args.max_frame_mb * 1_000_000), args.retry_max_s,
                            until_drained=args.until_drained)
    client = connect(args.source)
    predictor = predictor_from_args(args)
    consumer = Consumer(client, predictor, model_id(args.model), config)
    if args.prediction_log:
        consumer.prediction_log = PredictionLog(args.prediction_log)
    stop, interrupted = threading.Event(), []

    def on_signal(signum, _frame):
        interrupted.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    consumer.log(f"consumer {config.consumer!r} of group {config.group!r}: {config.input_stream} -> "
                 f"{config.output_stream} (model {consumer.model}); waiting for messages")
    try:
        stats = consumer.run(stop)
    finally:
        if consumer.prediction_log is not None:
            consumer.prediction_log.close()
    consumer.log(f"consumer {config.consumer!r}: {stats.results} results ({stats.errors} unreadable), "
                 f"{stats.dead} dead-lettered, {stats.reclaimed} taken over, {stats.superseded} superseded "
                 f"in {stats.seconds:.1f} s")
    return 130 if signal.SIGINT in interrupted else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
