"""Stream processor end to end: frames generated from real course images, the real model."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from going_modular.predictor import Predictor
from going_modular.deploy.stream import Frame, FrameQueue, iter_frame_dir, iter_mjpeg, main, predict_frame, run_stream

FRAMES_PER_CLASS = 4


@pytest.fixture(scope="module")
def predictor(mini_checkpoint) -> Predictor:
    return Predictor(mini_checkpoint)


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
    for record, data in zip(records, frames):
        expected = predictor.predict(data, top_k=3)
        assert record["label"] == expected["label"]
        assert record["prob"] == pytest.approx(expected["prob"], abs=1e-3)
        assert list(record["probs"]) == list(expected["probs"])
    # The frames come from 4 pizza, 4 steak and 4 sushi photos: the model should mostly agree.
    truth = ["pizza"] * FRAMES_PER_CLASS + ["steak"] * FRAMES_PER_CLASS + ["sushi"] * FRAMES_PER_CLASS
    assert sum(r["label"] == t for r, t in zip(records, truth)) >= 10


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
    assert main(["--source", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err

