"""Stream processor end to end: frames generated from real course images, the real model."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from demo_support import proc_status_mb
from PIL import Image

from going_modular.deploy import cli
from going_modular.deploy.monitor.log import read_log
from going_modular.deploy.predictor import OnnxPredictor
from going_modular.deploy.stream.__main__ import main
from going_modular.deploy.stream.mjpeg import FrameTooLarge, iter_mjpeg
from going_modular.deploy.stream.runtime import Frame, FrameQueue, iter_frame_dir, predict_frame, run_stream

ROOT = Path(__file__).resolve().parents[1]

FRAMES_PER_CLASS = 4


@pytest.fixture(scope="module")
def predictor() -> OnnxPredictor:
    return OnnxPredictor()  # the shipped FoodVision Mini bundle


@pytest.fixture(scope="module")
def frame_dir(pss_dir, tmp_path_factory):
    """12 video-like 320x240 JPEG frames made from real test images, named frame_0 .. frame_11
    (unpadded, so name order and frame order differ: frame_10 must come after frame_9)."""
    folder = tmp_path_factory.mktemp("frames")
    sources = [p for cls in ("pizza", "steak", "sushi")
               for p in sorted((pss_dir / "test" / cls).glob("*.jpg"))[:FRAMES_PER_CLASS]]
    for i, src in enumerate(sources):
        Image.open(src).convert("RGB").resize((320, 240)).save(folder / f"frame_{i}.jpg", quality=85)
    return folder


@pytest.fixture(scope="module")
def frames(frame_dir) -> list[bytes]:
    return list(iter_frame_dir(frame_dir))


def test_frame_dir_is_read_in_frame_order(frame_dir, frames):
    assert frames == [(frame_dir / f"frame_{i}.jpg").read_bytes() for i in range(len(frames))]


def test_every_frame_predicted_in_order_matching_predictor(predictor, frames):
    records = []
    stats = run_stream(predictor, frames, records.append, fps=0, queue_size=2, drop=False, top_k=3)
    assert stats.produced == stats.processed == len(frames)
    assert stats.dropped == stats.errors == 0
    assert stats.max_queue_depth <= 2
    assert [r["frame"] for r in records] == list(range(len(frames)))
    timestamps = [r["timestamp"] for r in records]
    assert timestamps == sorted(timestamps)
    for record, data in zip(records, frames, strict=True):
        expected = predictor.predict(data, top_k=3)
        assert record["label"] == expected["label"]
        assert record["prob"] == pytest.approx(expected["prob"], abs=1e-3)
        assert list(record["probs"]) == list(expected["probs"])
    # The frames come from 4 pizza, 4 steak and 4 sushi photos: the model should mostly agree.
    truth = ["pizza"] * FRAMES_PER_CLASS + ["steak"] * FRAMES_PER_CLASS + ["sushi"] * FRAMES_PER_CLASS
    assert sum(r["label"] == t for r, t in zip(records, truth, strict=True)) >= 10


def test_paced_source_accounts_for_every_frame(predictor, frames):
    fps = 20.0
    records = []
    stats = run_stream(predictor, frames, records.append, fps=fps, queue_size=2)
    assert stats.processed + stats.dropped == stats.produced == len(frames)
    assert sorted(r["frame"] for r in records) == list(range(len(frames)))  # each frame exactly once
    for r in records:  # the producer never releases a frame before its slot at `fps`
        assert r["timestamp"] >= r["frame"] / fps - 1e-3


def test_drops_oldest_frames_when_producer_outruns_model(predictor, frames):
    produced = frames * 4  # 48 frames handed over instantly: far faster than any forward pass
    records = []
    stats = run_stream(predictor, produced, records.append, fps=0, queue_size=2, drop=True)
    assert stats.dropped > 0
    assert stats.processed + stats.dropped == stats.produced == len(produced)
    assert stats.max_queue_depth <= 2  # bounded: no backlog builds up
    dropped = [r["frame"] for r in records if r.get("dropped")]
    processed = [r["frame"] for r in records if not r.get("dropped")]
    assert len(dropped) == stats.dropped and len(processed) == stats.processed
    assert processed == sorted(processed)
    assert sorted(dropped + processed) == list(range(len(produced)))
    assert processed[-1] == len(produced) - 1  # drop-oldest: the freshest frame is always scored


def test_frame_queue_drops_oldest_and_closes():
    q = FrameQueue(2)
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 1  # full: the oldest goes
    assert q.get() == 2
    q.close()
    assert q.get() == 3 and q.get() is None
    with pytest.raises(ValueError):
        FrameQueue(0)


def with_fake_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """Insert an APP1 segment holding a whole JPEG, as EXIF thumbnails do (its EOI is not the end)."""
    payload = b"Exif\x00\x00" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_mjpeg_split_survives_thumbnails_chunking_and_truncation(frames, shared_data):
    phone_photo = (shared_data / "custom_images" / "pizza-dad.jpeg").read_bytes()
    originals = frames[:3] + [with_fake_thumbnail(frames[3], frames[4]), phone_photo]
    stream = b"".join(originals) + b"--boundary junk--" + frames[5][: len(frames[5]) // 2]
    split = list(iter_mjpeg(io.BytesIO(stream), chunk_size=4096))  # small chunks: frames span reads
    assert split[:-1] == originals
    assert split[-1] == frames[5][: len(frames[5]) // 2]  # cut-off last frame is still handed over


def test_damaged_frame_becomes_error_record(predictor, frames):
    record = predict_frame(predictor, Frame(7, frames[0][:300], 0.5), start=0.0, top_k=3)
    assert record["frame"] == 7 and "label" not in record
    assert "damaged or truncated" in record["error"]


def test_cli_streams_mjpeg_file_to_json_lines(frames, tmp_path, capsys):
    clip = tmp_path / "clip.mjpeg"
    clip.write_bytes(b"".join(frames))
    out = tmp_path / "predictions.jsonl"
    assert main(["--source", str(clip), "--fps", "0", "--block", "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(frames)))
    assert all(r["label"] in ("pizza", "steak", "sushi") for r in records)
    assert f"processed {len(frames)}/{len(frames)} frames (0 dropped" in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [("missing.mjpeg", "source not found"),
                                           ("clip.mp4", "ffmpeg -i clip.mp4"),
                                           ("empty", "no frames found")])
def test_cli_bad_source_is_a_clear_error(tmp_path, capsys, name, message):
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (tmp_path / "empty").mkdir()
    assert cli.run(lambda: main(["--source", str(tmp_path / name)])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err



def damage_kinds(frame: bytes) -> dict[str, bytes]:
    """Every way a frame arrives broken: cut anywhere in its headers or scan data, its EOI lost,
    bits flipped, an empty JPEG, junk or random bytes next to it."""
    sos, dqt = frame.find(b"\xff\xda"), frame.find(b"\xff\xdb")
    rng = random.Random(0)
    junk = bytes(rng.randrange(256) for _ in range(100_000))
    kinds = {"cut after SOI": frame[:2], "cut in a table": frame[:dqt + 30], "cut before scan": frame[:sos],
             "cut in scan header": frame[:sos + 6], "cut in scan data": frame[: len(frame) // 2],
             "missing EOI": frame[:-2], "empty JPEG": b"\xff\xd8\xff\xd9", "junk after": frame + junk[:5000],
             "random bytes": junk}
    for seed in range(10):
        flipped = bytearray(frame)
        for _ in range(4):
            flipped[rng.randrange(2, len(frame))] ^= 1 << rng.randrange(8)
        kinds[f"bit flips {seed}"] = bytes(flipped)
    return kinds


def test_damaged_frame_never_costs_the_next_one(frames, predictor):
    """Before the resynchronising splitter, 6 of these kinds swallowed the next intact frame."""
    intact = [frames[1], frames[2], with_fake_thumbnail(frames[3], frames[4])]
    for kind, damaged in damage_kinds(frames[0]).items():
        for chunk_size in (1 << 20, 4096, 7):  # frames arriving whole, in pieces, and byte by byte
            split = list(iter_mjpeg(io.BytesIO(damaged + b"".join(intact)), chunk_size=chunk_size))
            assert split[-3:] == intact, (kind, chunk_size)
            assert len(split) <= 4, kind  # the damaged part is at most one frame
    records = []
    run_stream(predictor, [frames[0][:300], frames[1]], records.append, fps=0, drop=False)
    assert "damaged or truncated" in records[0]["error"]
    assert records[1]["label"] == predictor.predict(frames[1])["label"]


def test_oversize_frame_is_one_error_and_the_reader_resynchronises(frames, predictor):
    never_ending = frames[0][: frames[0].find(b"\xff\xda") + 14] + bytes(3_000_000)  # scan data, no end
    split = list(iter_mjpeg(io.BytesIO(frames[1] + never_ending + frames[2]), chunk_size=65536,
                            max_frame_bytes=1_000_000))
    assert split[0] == frames[1] and split[2] == frames[2] and len(split) == 3
    assert isinstance(split[1], FrameTooLarge)
    records = []
    run_stream(predictor, split, records.append, fps=0, drop=False)
    assert [("error" in r) for r in records] == [False, True, False]
    assert records[1]["error"] == "Frame larger than the 1 MB limit (--max-frame-mb): skipped."
    assert set(predictor.predict(frames[1])) <= set(records[0])  # every key of the prediction is passed through


def test_frame_dir_refuses_oversize_and_empty_files(frame_dir, tmp_path, predictor):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").write_bytes((frame_dir / "frame_0.jpg").read_bytes())
    (folder / "1.jpg").write_bytes(bytes(2_000_000))
    (folder / "2.jpg").write_bytes(b"")
    read = list(iter_frame_dir(folder, max_frame_bytes=1_000_000))
    assert isinstance(read[1], FrameTooLarge) and read[2] == b""
    records = []
    run_stream(predictor, read, records.append, fps=0, drop=False)
    assert "label" in records[0] and "1 MB limit" in records[1]["error"] and "empty" in records[2]["error"]


def test_never_ending_frame_on_a_pipe_keeps_memory_bounded(frames, tmp_path):
    """300 MB of a frame that never ends, piped into the CLI: one error line, the next frame is
    scored, and the peak RSS (from /proc) stays far below the frame (before: 393 MB when the
    last byte went in, 97 s of re-scanning, and the next frame swallowed)."""
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "going_modular.deploy.stream", "--source", "-", "--fps", "0",
                             "--block", "--max-frame-mb", "8", "--output", str(out)], cwd=ROOT,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdin.write(frames[1])
    proc.stdin.write(frames[0][: frames[0].find(b"\xff\xda") + 14])
    block = bytes(1 << 20)
    for _ in range(300):
        proc.stdin.write(block)
    proc.stdin.write(frames[2])
    proc.stdin.flush()
    peak = proc_status_mb(proc.pid, "VmHWM")  # the pipe holds 64 KB: the reader has seen all 300 MB by now
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert ["error" in r for r in records] == [False, True, False]
    assert "8 MB limit" in records[1]["error"]
    assert peak < 160  # interpreter + ONNX Runtime + model ~85 MB; the frame adds <= 8 MB + one read


@pytest.mark.parametrize("content", [b"", b"not a model at all\n", "truncated"])
def test_corrupt_model_is_one_error_line(frame_dir, tmp_path, content):
    bundle = ROOT / "demos" / "foodvision_mini" / "foodvision_mini.int8.onnx"
    corrupt = tmp_path / "model.int8.onnx"
    corrupt.write_bytes(bundle.read_bytes()[:200_000] if content == "truncated" else content)
    done = subprocess.run([sys.executable, "-m", "going_modular.deploy.stream", "--source", str(frame_dir),
                           "--model", str(corrupt)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "is not a readable ONNX model" in done.stderr and "Traceback" not in done.stderr


def test_stream_lines_and_the_prediction_log_name_the_model(predictor, frame_dir, frames, tmp_path):
    """--prediction-log on the frames CLI: one record per predicted frame (id: the frame index), and
    every JSON line of --output carries model_id and precision."""
    out, log = tmp_path / "out.jsonl", tmp_path / "predictions.jsonl"
    assert main(["--source", str(frame_dir), "--fps", "0", "--block", "--output", str(out),
                 "--prediction-log", str(log)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(frames)
    assert {(r["model_id"], r["precision"]) for r in lines} == {(predictor.model_id, predictor.precision)}
    records = read_log(log).records
    assert sorted(r["id"] for r in records) == list(range(len(frames)))
    for record in records:
        line = lines[record["id"]]
        assert record["mode"] == "stream" and record["model_id"] == predictor.model_id
        assert record["label"] == line["label"] and record["prob"] == pytest.approx(line["prob"], abs=1e-4)
        assert (record["width"], record["height"], record["format"]) == (320, 240, "JPEG")
        assert record["latency"] > 0
