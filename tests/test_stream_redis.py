"""The Redis Streams event source end to end: a real redis-server (benchmarks/redis_support.py), real
Food-101 photos from the data mirror, consumers as real processes killed with real signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import unavailable

from benchmarks.redis_support import ConsumerProcess, RedisServer, pending, redis_server, redis_server_binary, wait_for
from going_modular.deploy.bundle import model_id
from going_modular.deploy.monitor.log import read_log
from going_modular.deploy.predictor import DEFAULT_BUNDLE, OnnxPredictor
from going_modular.deploy.scoring import score_sources
from going_modular.deploy.stream.events import OUTPUT_FIELDS, handles, publish, read_results

GROUP = "foodvision"
CLAIM_IDLE_MS = "1500"  # short, so a dead consumer's messages are taken over within the test


@pytest.fixture(scope="module")
def redis():
    need_redis()
    with redis_server() as server:
        yield server


def need_redis() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("the redis client is not installed (pip install -r requirements.txt)")
    if redis_server_binary() is None:
        unavailable("redis-server not found: `make setup` or `apt-get install -y redis-server`")


@pytest.fixture(scope="module")
def photo_dir(shared_data, tmp_path_factory) -> Path:
    """The first 600 photos of Food-101's official test split (food101_101 in the mirror), linked, not
    copied, into CLASS/ID.jpg."""
    root = shared_data / "food101_101" / "food-101"
    folder = tmp_path_factory.mktemp("photos")
    for line in (root / "meta" / "test.txt").read_text().split()[:600]:
        (folder / line).parent.mkdir(exist_ok=True)
        os.symlink(root / "images" / f"{line}.jpg", folder / f"{line}.jpg")
    return folder


@pytest.fixture(scope="module")
def predictor() -> OnnxPredictor:
    return OnnxPredictor(num_threads=1)


def consumer(server: RedisServer, name: str, stream: str, tmp_path: Path, *extra: str) -> ConsumerProcess:
    return ConsumerProcess(server.url, name, ("--input-stream", stream, "--group", GROUP, "--output-stream",
                                              f"{stream}:out", "--create-group", "--threads", "1",
                                              "--claim-idle-ms", CLAIM_IDLE_MS, *extra), log_dir=tmp_path)


def local_labels(predictor, folder: Path, names: list[str]) -> dict[str, dict]:
    """What the local engine answers for each file: the same score_sources / predict_batch, batches of 8."""
    out = {}
    for i in range(0, len(names), 8):
        chunk = names[i:i + 8]
        out.update(zip(chunk, score_sources(predictor, [(folder / n).read_bytes() for n in chunk]), strict=True))
    return out


def test_cli_dispatch():
    assert handles(["publish", "--to", "redis://x"]) and handles(["--source", "redis://127.0.0.1:6379/0"])
    assert handles(["--fps", "0", "--source=rediss://h:1/2"])
    assert not handles(["--source", "frames/"]) and not handles(["--source", "-"]) and not handles([])


def test_600_photos_two_consumers_one_killed_each_scored_once(redis, photo_dir, predictor, tmp_path):
    """Two consumers share the group; one is SIGKILLed half-way; the other takes over what it held:
    every photo has exactly one result, with the local engine's label, and nothing is left pending."""
    stream = "t600:photos"
    published = subprocess.run([sys.executable, "-m", "going_modular.deploy.stream", "publish", "--to", redis.url,
                                "--stream", stream, str(photo_dir)], capture_output=True, text=True, timeout=120)
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("published 600 messages to t600:photos")
    client = redis.client()
    sent = {mid.decode(): fields[b"id"].decode() for mid, fields in client.xrange(stream)}
    assert len(sent) == 600
    a, b = (consumer(redis, name, stream, tmp_path, "--until-drained") for name in ("a", "b"))
    try:
        wait_for(lambda: client.xlen(f"{stream}:out") >= 300, 180, "half of the results")
        a.signal(signal.SIGKILL)
        a.wait(10)
        held_by_a = {c["name"].decode(): c["pending"] for c in client.xpending(stream, GROUP)["consumers"]}.get("a", 0)
        assert b.wait(180) == 0, b.log()
    finally:
        a.close()
        b.close()
    results = read_results(client, f"{stream}:out")
    assert client.xlen(f"{stream}:out") == len(results) == 600  # not even a duplicate to dedupe
    assert set(results) == set(sent) and pending(client, stream, GROUP) == 0
    assert {r["id"] for r in results.values()} == set(sent.values())
    if held_by_a:
        assert "taken over" in b.log() and " 0 taken over" not in b.log(), b.log()
    expected = local_labels(predictor, photo_dir, sorted(sent.values()))
    bundle = model_id(DEFAULT_BUNDLE)
    for source_id, entry in results.items():
        want = expected[entry["id"]]
        assert list(entry) == list(OUTPUT_FIELDS) and entry["source_id"] == source_id
        assert entry["error"] == "" and entry["model_id"] == bundle
        assert entry["label"] == want["label"], entry
        assert float(entry["prob"]) == pytest.approx(want["prob"], abs=2e-4)
        assert entry["known"] == str(want["known"]).lower()
    assert len({e["label"] for e in results.values()}) == 3  # a pizza/steak/sushi model, on 24 other dishes too


def test_poison_message_goes_to_dead_letter_after_three_deliveries(redis, photo_dir, tmp_path):
    """The poison's `uri` is a named pipe nobody writes: reading it hangs the consumer that holds it,
    as a stuck network mount would, and the supervisor (this test) SIGKILLs a consumer stuck on one
    message for a second. After 3 deliveries the next consumer dead-letters it without trying, and
    every other message gets its result."""
    stream = "poison:photos"
    client = redis.client()
    photos = sorted(photo_dir.rglob("*.jpg"))[:24]
    fifo = tmp_path / "stuck.fifo"
    os.mkfifo(fifo)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)  # so that the supervisor can watch it at once
    ids = publish(client, stream, photos[:5])
    poison = client.xadd(stream, {"id": "poison", "uri": str(fifo)}).decode()
    ids += publish(client, stream, photos[5:])
    kills, workers = [], []
    try:
        for n in range(6):
            worker = consumer(redis, f"p{n}", stream, tmp_path, "--until-drained")
            workers.append(worker)

            def stuck_or_exited(w=worker):
                held = client.xpending_range(stream, GROUP, poison, poison, 1)
                return w.proc.poll() is not None or (held and held[0]["consumer"].decode() == w.name
                                                     and held[0]["time_since_delivered"] >= 1000)
            wait_for(stuck_or_exited, 120, f"consumer {worker.name} to get stuck or finish")
            if worker.proc.poll() is not None:
                break
            worker.signal(signal.SIGKILL)
            worker.wait(10)
            kills.append(worker.name)
        assert worker.proc.returncode == 0, worker.log()
    finally:
        for w in workers:
            w.close()
    assert kills == ["p0", "p1", "p2"]
    dead = client.xrange(f"{stream}:dead")
    assert len(dead) == 1
    entry = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert entry["source_id"] == poison and entry["id"] == "poison" and entry["uri"] == str(fifo)
    assert entry["deliveries"] == "3" and "delivered 3 times without an acknowledgement" in entry["reason"]
    assert "dead-lettered" in worker.log()
    results = read_results(client, f"{stream}:out")
    assert set(results) == set(ids) and not any(r["error"] for r in results.values())
    assert client.xlen(f"{stream}:out") == len(ids) and pending(client, stream, GROUP) == 0


def test_redis_stopped_mid_run_consumer_waits_and_resumes(photo_dir, tmp_path):
    """Redis stops (SIGTERM, as a restart does) while a consumer works and comes back 3 s later on the
    same port with its data: the consumer says so in one line, retries with backoff, resumes; nothing lost."""
    need_redis()
    (tmp_path / "data").mkdir()
    server = RedisServer(tmp_path / "data").start()
    stream = "restart:photos"
    try:
        client = server.client()
        ids = publish(client, stream, sorted(photo_dir.rglob("*.jpg"))[:150])
        worker = consumer(server, "r", stream, tmp_path, "--until-drained", "--retry-max-s", "1")
        try:
            wait_for(lambda: client.xlen(f"{stream}:out") >= 20, 120, "the first results")
            server.stop()
            time.sleep(3)
            server.start()
            assert worker.wait(120) == 0, worker.log()
        finally:
            worker.close()
        log = worker.log()
        assert log.count("Redis unreachable") == 1 and log.count("Redis is back after") == 1, log
        client = server.client()
        results = read_results(client, f"{stream}:out")
        assert set(results) == set(ids) and client.xlen(f"{stream}:out") == 150
        assert pending(client, stream, GROUP) == 0 and not any(r["error"] for r in results.values())
    finally:
        server.stop()


def test_malformed_messages_are_error_results_and_sigterm_drains(redis, photo_dir, shared_data, tmp_path):
    """No image/uri, too large, not an image, truncated, a missing file: each an error result at once,
    never retried. SIGTERM mid-run: the consumer commits what it holds and exits 0; another finishes."""
    stream = "bad:photos"
    client = redis.client()
    big = shared_data / "custom_images" / "pizza-dad.jpeg"  # a real 2.9 MB phone photo: over --max-frame-mb 1
    photo = sorted(photo_dir.rglob("*.jpg"))[0].read_bytes()
    bad = {"no image or uri": ({"id": "x", "note": "hello"}, "neither an 'image' nor a 'uri'"),
           "too large": ({"image": big.read_bytes()}, "larger than the 1 MB limit"),
           "uri too large": ({"uri": str(big)}, "larger than the 1 MB limit"),
           "not an image": ({"image": b"pizza, steak, sushi\n"}, "not an image we can read"),
           "truncated": ({"image": photo[: len(photo) // 3]}, "damaged or truncated"),
           "empty": ({"image": b""}, "empty"),
           "missing file": ({"uri": str(tmp_path / "nowhere.jpg")}, "cannot be read: No such file or directory"),
           "missing file URI": ({"uri": (tmp_path / "nowhere.jpg").as_uri()}, "cannot be read: FileNotFoundError")}
    bad_ids = {client.xadd(stream, {"id": name, **fields}).decode(): (name, phrase)
               for name, (fields, phrase) in bad.items()}
    good_ids = publish(client, stream, sorted(photo_dir.rglob("*.jpg"))[:120])
    by_uri = [client.xadd(stream, {"id": "by-uri", "uri": sorted(photo_dir.rglob("*.jpg"))[0].resolve().as_uri()})]
    good_ids += [mid.decode() for mid in by_uri]  # a pyarrow file:// URI, read by the consumer
    first = consumer(redis, "s1", stream, tmp_path, "--max-frame-mb", "1")
    try:
        wait_for(lambda: client.xlen(f"{stream}:out") >= 16, 120, "the first results")
        first.signal(signal.SIGTERM)
        assert first.wait(30) == 0, first.log()
    finally:
        first.close()
    done = client.xlen(f"{stream}:out")
    assert 16 <= done < len(bad_ids) + len(good_ids), "SIGTERM should have come mid-run"
    assert pending(client, stream, GROUP) == 0  # what it held was committed before it exited
    second = consumer(redis, "s2", stream, tmp_path, "--max-frame-mb", "1", "--until-drained")
    try:
        assert second.wait(120) == 0, second.log()
    finally:
        second.close()
    assert " 0 taken over" in second.log()  # nothing was left for it to take over
    results = read_results(client, f"{stream}:out")
    assert set(results) == set(bad_ids) | set(good_ids) and client.xlen(f"{stream}:out") == len(results)
    for source_id, (name, phrase) in bad_ids.items():
        entry = results[source_id]
        assert phrase in entry["error"] and entry["label"] == entry["prob"] == "", (name, entry)
    assert not any(results[i]["error"] for i in good_ids)
    by_bytes, by_uri = results[good_ids[0]], results[good_ids[-1]]  # the same photo, sent both ways
    assert (by_uri["label"], by_uri["prob"]) == (by_bytes["label"], by_bytes["prob"])
    assert str(tmp_path) not in "".join(r["error"] for r in results.values())  # errors never name the machine's paths
    assert client.xlen(f"{stream}:dead") == 0 and pending(client, stream, GROUP) == 0


def test_restarted_consumer_finishes_its_own_pending_first(redis, photo_dir, tmp_path):
    """SIGKILL, then a restart under the same name: it scores what it held before anything new, and
    without waiting for --claim-idle-ms (no other consumer could have taken those messages yet)."""
    stream = "own:photos"
    client = redis.client()
    ids = publish(client, stream, sorted(photo_dir.rglob("*.jpg"))[:60])
    never_claims = ("--claim-idle-ms", "600000")
    first = ConsumerProcess(redis.url, "o", ("--input-stream", stream, "--output-stream", f"{stream}:out",
                                              "--create-group", "--threads", "1", *never_claims), log_dir=tmp_path)
    try:
        wait_for(lambda: pending(client, stream, GROUP) and client.xlen(f"{stream}:out") >= 8, 120, "work in hand")
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.close()
    held = {m["message_id"].decode() for m in client.xpending_range(stream, GROUP, "-", "+", 100, "o")}
    assert held and len(held) <= 16  # --max-in-flight bounds what a consumer holds
    before = client.xlen(f"{stream}:out")
    again = ConsumerProcess(redis.url, "o", ("--input-stream", stream, "--output-stream", f"{stream}:out",
                                              "--threads", "1", "--until-drained", *never_claims), log_dir=tmp_path)
    try:
        assert again.wait(120) == 0, again.log()
    finally:
        again.close()
    assert f", {len(held)} taken over" in again.log(), again.log()
    written = [fields[b"source_id"].decode() for _, fields in client.xrange(f"{stream}:out")]
    assert set(written[before:before + len(held)]) == held  # its own pending came first
    results = read_results(client, f"{stream}:out")
    assert set(results) == set(ids) and client.xlen(f"{stream}:out") == len(ids)
    assert pending(client, stream, GROUP) == 0


def test_serving_wing_only_imports_redis_when_the_event_stream_runs():
    """`deploy.stream` (and the Space, which ships deploy/) import neither torch nor the Redis client."""
    code = ("import sys, going_modular.deploy.stream, going_modular.deploy.stream.events; "
            "print(sorted(m for m in ('torch', 'redis', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_consumer_writes_the_prediction_log(redis, photo_dir, predictor, tmp_path):
    """--prediction-log on the event consumer: one record per result, id = the input message id."""
    stream = "tlog:photos"
    client = redis.client()
    names = sorted(str(p.relative_to(photo_dir)) for p in photo_dir.rglob("*.jpg"))[:20]
    publish(client, stream, [photo_dir / n for n in names])
    log = tmp_path / "predictions.jsonl"
    worker = consumer(redis, "logger", stream, tmp_path, "--until-drained", "--prediction-log", str(log))
    try:
        assert worker.wait(180) == 0, worker.log()
    finally:
        worker.close()
    results = read_results(client, f"{stream}:out")
    records = read_log(log).records
    assert sorted(r["id"] for r in records) == sorted(results) and len(records) == 20
    for record in records:
        entry = results[record["id"]]
        assert record["mode"] == "events" and record["model_id"] == entry["model_id"] == predictor.model_id
        assert record["precision"] == predictor.precision
        assert record["label"] == entry["label"] and record["format"] == "JPEG"
