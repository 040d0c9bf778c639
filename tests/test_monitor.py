"""After deployment: the prediction log keeps serving safe (bounded queue, rotation, unwritable
paths, a SIGKILLed writer), and the drift monitor stays quiet on in-distribution photos and fires
on shifted ones: real photos, the shipped bundle, real subprocesses, real files."""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from going_modular.deploy import cli
from going_modular.deploy.bundle import model_id
from going_modular.deploy.monitor import drift
from going_modular.deploy.monitor.log import (
    LOG_ENV,
    RECORD_FIELDS,
    PredictionLog,
    log_from_env,
    prediction_record,
    read_log,
)
from going_modular.deploy.monitor.reference import compute_reference
from going_modular.deploy.monitor.stats import image_stats, predict_batch_with_stats, source_info
from going_modular.deploy.predictor import DEFAULT_BUNDLE, OnnxPredictor
from tests.demo_support import non_food_photo

ROOT = Path(__file__).resolve().parents[1]
PIZZA = ROOT / "demos" / "foodvision_mini" / "examples" / "pizza.jpg"


def record(i: int = 0, model: str = "m", **extra) -> dict:
    """A prediction record as the log writes it (for the log's own mechanics)."""
    return {"time": "2026-01-01T00:00:00.000Z", "mode": "test", "id": i, "model_id": model, "label": "pizza",
            "prob": 0.9, **extra}


@pytest.fixture(scope="module")
def predictor() -> OnnxPredictor:
    return OnnxPredictor(DEFAULT_BUNDLE)


# -- records and image statistics ---------------------------------------------------------------
def test_one_record_per_prediction_with_the_model_id(predictor, tmp_path):
    (result, stats), = predict_batch_with_stats(predictor, [PIZZA])
    assert result == {**predictor.predict(PIZZA), "seconds": result["seconds"]}  # the same answer as predict
    rec = prediction_record(predictor, result, stats, mode="web", id="req-1")
    assert tuple(rec) == RECORD_FIELDS
    assert rec["model_id"] == predictor.model_id == model_id(DEFAULT_BUNDLE)
    import hashlib

    assert predictor.model_id == hashlib.sha256(DEFAULT_BUNDLE.read_bytes()).hexdigest()[:12]
    assert rec["precision"] == "int8" and rec["label"] == "pizza" and rec["known"] is True
    assert [name for name, _ in rec["top3"]] == list(result["probs"])[:3]
    with Image.open(PIZZA) as img:
        assert (rec["width"], rec["height"], rec["format"]) == (*img.size, "JPEG")
    assert 0 < rec["brightness"] < 255 and 0 < rec["contrast"] < 128
    assert len(json.dumps(rec)) < 600  # statistics, never pixels


def test_source_info_from_every_input_kind(tmp_path):
    data = PIZZA.read_bytes()
    with Image.open(PIZZA) as img:
        size = img.size
        rotated = tmp_path / "exif_rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways; viewers (and load_image) turn it upright
        img.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif)
        pil = img.copy()
    assert source_info(PIZZA) == source_info(str(PIZZA)) == source_info(data) == {
        "width": size[0], "height": size[1], "format": "JPEG"}
    assert source_info(rotated) == {"width": size[0], "height": size[1], "format": "JPEG"}
    assert source_info(np.asarray(pil)) == {"width": size[0], "height": size[1], "format": "array"}
    assert source_info(pil)["format"] == "image"
    f = io.BytesIO(data)
    f.read(10)
    assert source_info(f)["format"] == "JPEG" and f.tell() == 10  # put back where the caller had it
    assert source_info(b"not an image") == {"width": None, "height": None, "format": None}


def test_brightness_and_contrast_follow_the_photo(predictor):
    img = Image.open(PIZZA).convert("RGB")
    dark = ImageEnhance.Brightness(img).enhance(0.5)
    flat = ImageEnhance.Contrast(img).enhance(0.3)
    base, darker, flatter = (image_stats(predictor.preprocess(im)) for im in (img, dark, flat))
    assert darker["brightness"] == pytest.approx(base["brightness"] / 2, rel=0.05)
    assert flatter["contrast"] == pytest.approx(base["contrast"] * 0.3, rel=0.1)


# -- the log ---------------------------------------------------------------------------------
def test_log_writes_json_lines_and_reads_them_back(tmp_path):
    path = tmp_path / "logs" / "predictions.jsonl"  # its folder is created
    with PredictionLog(path) as log:
        assert all(log.write(record(i)) for i in range(50))
        assert log.flush()
        assert log.status() == {**log.status(), "ok": True, "written": 50, "dropped": 0, "failed": 0}
    contents = read_log(path)
    assert [r["id"] for r in contents.records] == list(range(50)) and contents.skipped == 0
    assert path.read_bytes().count(b"\n") == 50


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    """A writer stuck on its file (here a FIFO nobody reads yet) never blocks serving: past
    queue_size the records are dropped and counted."""
    fifo = tmp_path / "stuck.jsonl"
    os.mkfifo(fifo)
    log = PredictionLog(fifo, queue_size=10)
    assert log.write(record(0))
    assert not log.flush(timeout=0.5)  # the thread is blocked opening the FIFO
    accepted = [log.write(record(i)) for i in range(1, 101)]  # returns at once: the test would hang otherwise
    assert sum(accepted) == 10 and log.status()["dropped"] == 90 and log.status()["queued"] == 10
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the disk comes back
    try:
        assert log.flush(timeout=10)
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"\n") < 11 and time.monotonic() < deadline:
            try:
                data += os.read(reader, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
        assert [json.loads(line)["id"] for line in data.splitlines()] == list(range(11))
        assert log.status()["written"] == 11
    finally:
        log.close()
        os.close(reader)


def test_rotation_bounds_the_files(tmp_path):
    path = tmp_path / "predictions.jsonl"
    line = len(json.dumps(record(0, pad="y" * 100), separators=(",", ":"))) + 1
    with PredictionLog(path, max_bytes=20 * line, backups=2) as log:
        for i in range(100):
            log.write(record(i, pad="y" * 100))
            log.flush()
        status = log.status()
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 20 * line + 2 for f in files)
    ids = [r["id"] for r in read_log(path).records]
    assert ids == list(range(ids[0], 100)) and 40 <= len(ids) <= 60  # the newest, oldest first
    assert status["rotations"] >= 4 and status["written"] == 100
    current = [r["id"] for r in read_log(path, backups=False).records]
    assert current and current == ids[-len(current):]  # the current file holds the newest


@pytest.mark.parametrize("where", ["parent is a file", "disk full"])
def test_unwritable_log_keeps_predictions_going(predictor, tmp_path, where, caplog):
    if where == "parent is a file":
        (tmp_path / "a_file").write_text("not a folder")
        path = tmp_path / "a_file" / "predictions.jsonl"
    else:
        path = Path("/dev/full")  # every write fails with ENOSPC, as on a full disk
    with caplog.at_level(logging.WARNING), PredictionLog(path) as log:
        for _ in range(3):  # serving goes on: predictions made, records queued, nothing raised
            (result, stats), = predict_batch_with_stats(predictor, [PIZZA])
            assert result["label"] == "pizza"
            assert log.write(prediction_record(predictor, result, stats, mode="web", id="r"))
        assert log.flush()
        status = log.status()
    assert status["ok"] is False and status["failed"] == 3 and status["written"] == 0
    assert str(path) in status["last_error"]
    assert where != "disk full" or "disk full" in status["last_error"]
    assert caplog.text.count("prediction log") == 1  # one warning, not one per record


def test_log_from_env(tmp_path):
    assert log_from_env({}) is None and log_from_env({LOG_ENV: "  "}) is None
    log = log_from_env({LOG_ENV: str(tmp_path / "demo.jsonl")})
    try:
        assert isinstance(log, PredictionLog) and log.path == tmp_path / "demo.jsonl"
    finally:
        log.close()


WRITER = """
import sys
from going_modular.deploy.monitor.log import PredictionLog
log = PredictionLog(sys.argv[1], max_bytes=1 << 40)  # one file: no rotation in this test
pad = "x" * (16 << 20)  # big lines: each takes the kernel a while to copy, so the kill can land inside one
for i in range(1000):
    log.write({"time": "t", "model_id": "m", "label": "pizza", "prob": 0.5, "id": f"{i:06d}", "pad": pad})
    log.flush(60)
"""


def test_sigkilled_writer_leaves_one_torn_last_line(tmp_path, caplog):
    """SIGKILL a process in the middle of writing a line: every line but the last is whole, readers
    skip the torn one with a warning, and the next writer starts on a fresh line."""
    path = tmp_path / "killed.jsonl"
    line = (16 << 20) + len(json.dumps({"time": "t", "model_id": "m", "label": "pizza", "prob": 0.5,
                                        "id": "000000", "pad": ""}, separators=(",", ":"))) + 1
    for _ in range(5):  # the kill must land inside a write; it nearly always does at the first try
        path.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                size = path.stat().st_size if path.exists() else 0
                if size > 2 * line and size % line:  # two lines written, the third half way
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        finally:
            proc.kill()
            proc.wait()
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            break
    assert proc.returncode == -signal.SIGKILL and not data.endswith(b"\n"), "the kill never landed mid-line"
    *whole, torn = data.split(b"\n")
    assert len(whole) >= 2 and all(json.loads(w)["pad"] for w in whole) and 0 < len(torn) < line
    with caplog.at_level(logging.WARNING):
        contents = read_log(path)
    assert len(contents.records) == len(whole) and contents.invalid == 1 and contents.foreign == 0
    assert "skipped 1 line" in caplog.text and "1 torn or not JSON" in caplog.text
    with PredictionLog(path) as log:  # a restarted server appends to the same file
        log.write(record(7))
    contents = read_log(path)
    assert contents.records[-1]["id"] == 7 and contents.invalid == 1  # the torn line stayed alone


# -- statistics: the textbook tests, checked against SciPy ---------------------------------------
def test_tests_match_scipy():
    from scipy import stats as sp

    rng = np.random.default_rng(0)
    for shift in (0.0, 0.2, 0.5):
        a, b = rng.normal(shift, 1, 200), rng.normal(0, 1, 150)
        d = sp.ks_2samp(a, b).statistic
        limit = sp.kstwobign.sf(np.sqrt(200 * 150 / 350) * d)  # Kolmogorov's limit distribution
        assert drift.ks_2samp(a, b) == pytest.approx((d, limit), rel=1e-9, abs=1e-15)
        assert limit >= sp.ks_2samp(a, b, method="exact").pvalue  # close to exact, on the safe side
    for shift in (0.0, 0.3, -0.3):
        a, b = np.round(rng.normal(shift, 1, 200), 1), np.round(rng.normal(0, 1, 150), 1)  # with ties
        ref = sp.mannwhitneyu(a, b, alternative="greater", method="asymptotic", use_continuity=True)
        assert drift.mann_whitney_greater(a, b) == pytest.approx((ref.statistic / 30000, ref.pvalue), rel=1e-9)
    for x, dof in ((0.5, 1), (3.0, 2), (10.0, 2), (40.0, 33), (200.0, 100), (1e-3, 5)):
        assert drift.chi2_sf(x, dof) == pytest.approx(sp.chi2.sf(x, dof), rel=1e-8, abs=1e-15)
    for a, b in (([10, 20, 30], [12, 18, 33]), ([50, 5, 5, 0], [10, 40, 10, 3])):
        chi2, p, dof, _ = sp.chi2_contingency([a, b], correction=False)
        assert drift.chi2_2xk(a, b) == pytest.approx((chi2, dof, p), rel=1e-8)
    for k_a, n_a, k_b, n_b in ((12, 200, 2, 150), (3, 200, 2, 150), (0, 50, 5, 50), (200, 200, 0, 150)):
        expected = sp.fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]], alternative="greater")[1]
        assert drift.fisher_greater(k_a, n_a, k_b, n_b) == pytest.approx(expected, rel=1e-8)


# -- the monitor on real traffic ----------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_file(pss_dir, tmp_path_factory) -> Path:
    """The shipped bundle's reference, from its test split, by the reference CLI."""
    out = tmp_path_factory.mktemp("ref") / "reference.json"
    proc = subprocess.run([sys.executable, "-m", "going_modular.deploy.monitor.reference", "--bundle",
                           str(DEFAULT_BUNDLE), "--data", str(pss_dir / "test"), "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "from 150 images" in proc.stdout
    return out


def log_photos(predictor, images, path: Path, mode: str = "test") -> Path:
    """Predict real photos and log them the way serving does."""
    with PredictionLog(path) as log:
        for i in range(0, len(images), 16):
            for j, (result, stats) in enumerate(predict_batch_with_stats(predictor, images[i:i + 16])):
                log.write(prediction_record(predictor, result, stats, mode=mode, id=i + j))
    return path


@pytest.fixture(scope="module")
def traffic(predictor, pss_dir, shared_data, tmp_path_factory) -> dict[str, Path]:
    """Logs of real traffic: the test split, the unseen menu photos, and those followed by a shift."""
    folder = tmp_path_factory.mktemp("traffic")
    test = sorted((pss_dir / "test").glob("*/*.jpg"))
    menu = sorted((shared_data / "menu_calibration").glob("*/*.jpg"))
    others = json.loads((shared_data / "food101_34" / "food-101" / "meta" / "test.json").read_text())
    other_dishes = [shared_data / "food101_34" / "food-101" / "images" / f"{item}.jpg"
                    for name in ("ramen", "waffles", "tacos", "hot_dog", "falafel") for item in others[name][:17]]
    logs = {"test": log_photos(predictor, test, folder / "test.jsonl"),
            "menu": log_photos(predictor, menu, folder / "menu.jsonl")}
    dark = []
    for path in menu[:100]:
        buffer = io.BytesIO()
        ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(0.5).save(buffer, "JPEG", quality=90)
        dark.append(buffer.getvalue())
    for name, shifted in (("other_dishes", other_dishes), ("dark", dark)):
        path = folder / f"{name}.jsonl"
        path.write_bytes(logs["menu"].read_bytes())
        logs[name] = log_photos(predictor, shifted, path)  # appended after the menu traffic
    return logs


def run_monitor(capsys, *args) -> tuple[int, str, str]:
    code = cli.run(lambda: drift.main([str(a) for a in args]))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("traffic_name", ["test", "menu"])
def test_monitor_is_quiet_on_in_distribution_traffic(traffic, reference_file, traffic_name, capsys, tmp_path):
    report = tmp_path / "report.html"
    code, out, _ = run_monitor(capsys, "--log", traffic[traffic_name], "--reference", reference_file,
                               "--window", 150, "--report", report)
    assert code == 0, out
    lines = out.splitlines()
    for check in ("unknown rate", "label mix", "confidence", "ood score", "brightness", "contrast", "aspect ratio"):
        line = next(x for x in lines if x[6:].startswith(check))
        assert line.startswith("ok ") and "alarm below 0.0071" in line, line  # 0.05 / 7 checks
    assert any(x.startswith("skip  latency") for x in lines)  # no history before the window to compare with
    assert lines[-1] == "no drift" and "no drift" in report.read_text()


@pytest.mark.parametrize("shift, check", [("other_dishes", "unknown rate"), ("dark", "brightness")])
def test_monitor_fires_on_shifted_traffic(traffic, reference_file, shift, check, capsys, tmp_path):
    report = tmp_path / "report.html"
    code, out, _ = run_monitor(capsys, "--log", traffic[shift], "--reference", reference_file, "--report", report)
    assert code == 1, out
    assert any(x.startswith(f"DRIFT {check}") for x in out.splitlines()), out
    assert out.splitlines()[-1].startswith("DRIFT: ") and check in report.read_text()
    assert any(x.startswith("ok    latency") or x.startswith("DRIFT latency") for x in out.splitlines())


def test_monitor_falls_back_to_the_bundles_reference(predictor, pss_dir, traffic, tmp_path, capsys):
    """A bundle exported with a reference needs no --reference; one without says how to make one."""
    import onnx

    test = sorted((pss_dir / "test").glob("*/*.jpg"))
    model = onnx.load(str(DEFAULT_BUNDLE))
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "foodvision"))
    without = {k: v for k, v in meta.items() if k != "reference"}
    for name, content in (("with.onnx", {**without, "reference": compute_reference(predictor, test)}),
                          ("without.onnx", without)):
        kept = [p for p in model.metadata_props if p.key != "foodvision"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key="foodvision", value=json.dumps(content))
        onnx.save(model, str(tmp_path / name))
    bundle = OnnxPredictor(tmp_path / "with.onnx")
    log = log_photos(bundle, [PIZZA] * 10 + [non_food_photo("astronaut")] * 30, tmp_path / "with.jsonl")
    code, out, _ = run_monitor(capsys, "--log", log, "--bundle", tmp_path / "with.onnx")
    assert code == 1 and "with.onnx (embedded)" in out and "DRIFT unknown rate" in out
    code, _, err = run_monitor(capsys, "--log", log, "--bundle", tmp_path / "without.onnx")
    assert code == 2 and "exported without a reference" in err and "monitor.reference" in err


# -- bad input --------------------------------------------------------------------------------
def test_torn_non_json_and_foreign_lines_are_skipped_and_counted(traffic, reference_file, tmp_path, capsys, caplog):
    path = tmp_path / "messy.jsonl"
    lines = traffic["menu"].read_text().splitlines()
    path.write_text("\n".join(lines[:50] + ["not json at all", '{"level": "info", "msg": "a web server line"}',
                                            "[1, 2, 3]"] + lines[50:]) + "\n" + lines[0][:40])
    with caplog.at_level(logging.WARNING):
        code, out, _ = run_monitor(capsys, "--log", path, "--reference", reference_file)
    assert code == 0, out
    assert "note: skipped 4 lines (2 torn or not JSON, 2 foreign)" in out
    assert "skipped 4 line(s)" in caplog.text  # one warning for the whole log


def test_empty_missing_and_short_logs_are_one_clear_error(reference_file, traffic, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"msg": "hello"}\n')
    short = tmp_path / "short.jsonl"
    short.write_text("".join(traffic["menu"].read_text().splitlines(keepends=True)[:5]))
    for log, message in ((empty, "holds no predictions"), (foreign, "holds no predictions (1 other lines)"),
                         (tmp_path / "nope.jsonl", "no prediction log at"),
                         (short, "only 5 predictions to check; the monitor needs at least 20")):
        code, out, err = run_monitor(capsys, "--log", log, "--reference", reference_file)
        assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_an_unwritable_report_keeps_the_verdict(traffic, reference_file, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, out, err = run_monitor(capsys, "--log", traffic["other_dishes"], "--reference", reference_file,
                                 "--report", tmp_path / "a_file" / "report.html")
    assert code == 1 and out.splitlines()[-1].startswith("DRIFT: ")
    assert err.startswith("warning: cannot write the report") and len(err.strip().splitlines()) == 1


def test_window_larger_than_the_log_checks_what_there_is(traffic, reference_file, capsys):
    code, out, _ = run_monitor(capsys, "--log", traffic["menu"], "--reference", reference_file, "--window", 1000)
    assert code == 0 and "fewer than --window 1000: checking them all" in out
    assert "latest 150 predictions" in out


def test_another_models_log_is_refused(traffic, reference_file, tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({**json.loads(x), "model_id": "0123456789ab"}) + "\n"
                             for x in traffic["menu"].read_text().splitlines()))
    code, _, err = run_monitor(capsys, "--log", other, "--reference", reference_file)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds predictions of model 0123456789ab (150), not of" in err
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(other.read_text() + traffic["menu"].read_text())
    code, out, _ = run_monitor(capsys, "--log", mixed, "--reference", reference_file)
    assert code == 0 and "ignored 150 predictions of other models (0123456789ab)" in out
    code, _, err = run_monitor(capsys, "--log", mixed, "--reference", reference_file, "--bundle",
                               ROOT / "demos" / "foodvision_big" / "foodvision_big.int8.onnx")
    assert code == 2 and "is the reference of model" in err


def test_monitor_cli_exit_codes_in_a_subprocess(traffic, reference_file):
    """As cron or CI sees it: 0 no drift, 1 drift, 2 could not check."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    codes = [subprocess.run([sys.executable, "-m", "going_modular.deploy.monitor", "--log", str(log), "--reference",
                             str(reference_file)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300).returncode
             for log in (traffic["menu"], traffic["other_dishes"], traffic["menu"].with_name("nope.jsonl"))]
    assert codes == [0, 1, 2]



SHARING_WRITER = """
import sys
from going_modular.deploy.monitor.log import PredictionLog
with PredictionLog(sys.argv[1], max_bytes=4000, backups=100, flush_seconds=0.001) as log:
    for i in range(300):
        log.write({"time": "t", "model_id": "m", "label": "pizza", "prob": 0.5, "id": f"{sys.argv[2]}-{i}"})
        if i % 7 == 0:
            log.flush()
"""


def test_worker_processes_share_one_log_and_rotate_it_once(tmp_path):
    """Several processes (the web service's workers) append to one log and rotate it: every line
    whole, none lost or written twice."""
    path = tmp_path / "shared.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", SHARING_WRITER, str(path), name], cwd=ROOT, env=env)
             for name in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    contents = read_log(path)
    assert contents.skipped == 0 and len(log_files := [path, *tmp_path.glob("shared.jsonl.*[0-9]")]) > 3
    ids = [r["id"] for r in contents.records]
    assert sorted(ids) == sorted(f"{n}-{i}" for n in "abc" for i in range(300))
    for name in "abc":  # each writer's lines in its own order, oldest file first
        mine = [int(x.split("-")[1]) for x in ids if x.startswith(name)]
        assert mine == sorted(mine)
    # About max_bytes: writers that checked the size at the same moment may each add their batch.
    assert all(f.stat().st_size <= 4000 + 2000 for f in log_files)
