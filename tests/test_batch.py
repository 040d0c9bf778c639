"""Batch scoring (local engine) end to end on the real course test set (150 images) with the
shipped int8 bundle: accuracy, error rows, resume, and the hardening of issue 14 (single writer,
append-only journal under kill -9, any file name, permission-denied files), with real files and
real subprocesses."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from going_modular.deploy.batch.__main__ import main
from going_modular.deploy.batch.job import (
    FIELDS,
    csv_cells,
    journal_path,
    read_journal,
    read_output,
    result_row,
    row_from_cells,
)
from going_modular.deploy.batch.local import score_folder
from going_modular.deploy.monitor.log import read_log
from going_modular.deploy.predictor import load_predictor

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "going_modular.deploy.batch_predict"]


@pytest.fixture(scope="module")
def predictor():
    return load_predictor()  # the shipped FoodVision Mini int8 bundle


def link_tree(src: Path, dst: Path, limit: int | None = None) -> Path:
    """Mirror src/<class>/<image> into dst with symlinks (the real images, without copying them)."""
    for cls_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls_dir.name).mkdir(parents=True)
        for image in sorted(cls_dir.iterdir())[:limit]:
            os.symlink(image, dst / cls_dir.name / image.name)
    return dst


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELDS
        return list(reader)


def run_cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def journal_count(output: Path) -> int:
    """Complete rows in the journal and the published output, as a kill leaves them."""
    return len({r["path"] for r in read_output(output) + read_journal(journal_path(output))})


@pytest.fixture(scope="module")
def scored(pss_dir, predictor, tmp_path_factory):
    """The real test set plus a truncated JPEG, an empty file and a non-image file, scored once."""
    root = link_tree(pss_dir / "test", tmp_path_factory.mktemp("batch") / "input")
    real = next((pss_dir / "test" / "pizza").glob("*.jpg")).read_bytes()
    (root / "pizza" / "corrupt.jpg").write_bytes(real[: len(real) // 3])
    (root / "sushi" / "empty.jpg").write_bytes(b"")
    (root / "README.txt").write_text("not an image: ignored")
    output = root.parent / "out" / "predictions.csv"
    summary = score_folder(predictor, root, output, batch_size=32, progress=False)
    return root, output, summary


def test_scores_every_image_with_high_accuracy(scored):
    root, output, summary = scored
    rows = read_csv(output)
    assert summary["total"] == summary["scored"] == len(rows) == 152
    assert summary["errors"] == 2 and summary["images_per_s"] > 0
    assert len({r["path"] for r in rows}) == 152
    good = [r for r in rows if not r["error"]]
    accuracy = sum(r["path"].split("/")[0] == r["label"] for r in good) / len(good)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f} from the CSV"
    for r in good:
        top3 = [item.split(":") for item in r["top3"].split(";")]
        assert [name for name, _ in top3][0] == r["label"] and len(top3) == 3
        assert float(top3[0][1]) == pytest.approx(float(r["prob"]), abs=1e-4)
        assert float(r["seconds"]) > 0
    assert not journal_path(output).exists()  # published, then dropped


def test_rows_are_what_the_predictor_answers_one_by_one(scored, predictor):
    """Batched in eights with bad files among them, each row is still exactly predictor.predict(file)."""
    root, output, _ = scored
    for r in read_csv(output)[::10]:
        if not r["error"]:
            answer = predictor.predict((root / r["path"]).read_bytes())
            expected = result_row(r["path"], {**answer, "model_id": predictor.model_id,
                                              "precision": predictor.precision})
            assert {**r, "seconds": ""} == {**csv_cells(expected), "seconds": ""}


def test_corrupt_and_empty_files_get_error_rows(scored):
    _, output, _ = scored
    rows = {r["path"]: r for r in read_csv(output)}
    assert "damaged or truncated" in rows["pizza/corrupt.jpg"]["error"]
    assert rows["sushi/empty.jpg"]["error"] == "The file is empty."
    assert rows["pizza/corrupt.jpg"]["label"] == rows["pizza/corrupt.jpg"]["prob"] == ""


def test_rerun_skips_rows_already_written(scored, predictor):
    root, output, _ = scored
    rows = read_csv(output)
    kept, removed = rows[:-10], rows[-10:]  # as if the last 10 images had never been scored
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(kept)
    summary = score_folder(predictor, root, output, batch_size=4, progress=False)
    assert (summary["skipped"], summary["scored"]) == (142, 10)
    after = read_csv(output)
    assert after[:142] == kept  # earlier rows untouched
    assert [(r["path"], r["label"]) for r in after[142:]] == [(r["path"], r["label"]) for r in removed]
    again = score_folder(predictor, root, output, progress=False)
    assert (again["skipped"], again["scored"]) == (152, 0)


def test_malformed_rows_and_journal_lines_are_skipped_with_a_warning(scored, predictor, tmp_path, caplog):
    """Issue 14 defects 2 and 5: a damaged output or journal never stops the next run; the
    damaged rows are just scored again."""
    root, output, _ = scored
    rows = read_csv(output)
    copy = tmp_path / "predictions.csv"
    lines = output.read_text(encoding="utf-8").splitlines(keepends=True)
    # Output: row 1 has an extra field (what interleaved writers left), row 2 lost its last fields.
    copy.write_text("".join([lines[0], lines[1].rstrip("\n") + ",extra\n", lines[2].split(",")[0] + ",x\n",
                             *lines[3:100]]), encoding="utf-8")
    # Journal: rows 100..109 as the engine journals them, then garbage and a line torn by a kill.
    journal = journal_path(copy)
    good_lines = [json.dumps(r) + "\n" for r in rows[99:109]]
    journal.write_bytes("".join(good_lines).encode() + b"\xff\xfe not json\n[1, 2]\n" + good_lines[0][:20].encode())
    with caplog.at_level(logging.WARNING, logger="going_modular.deploy.batch.job"):
        summary = score_folder(predictor, root, copy, progress=False)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("skipped 2 malformed row(s)" in w for w in warnings), warnings
    assert any("skipped 3 malformed line(s)" in w for w in warnings), warnings
    assert (summary["skipped"], summary["scored"]) == (97 + 10, 152 - 107)
    after = {r["path"]: r["label"] for r in read_csv(copy)}
    assert after == {r["path"]: r["label"] for r in rows}
    assert not journal.exists()


def poll(predicate, timeout: float = 60.0):
    """Wait for a state another process reaches (never a timing assertion: the limit only stops a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the other process never got there"
        time.sleep(0.005)


def test_kill_just_after_resume_loses_nothing(scored, tmp_path):
    """Issue 14 defect 5: the journal is appended, never truncated. Run 1 is killed mid-run;
    run 2 (a resume) is killed at its first write to the journal; no finished row is lost."""
    root, reference, _ = scored
    output = tmp_path / "predictions.csv"
    journal = journal_path(output)
    first = run_cli("--input", root, "--output", output, "--batch-size", 2, "--threads", 1)
    poll(lambda: journal.exists() and journal_count(output) >= 20)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = journal.read_bytes()
    finished = journal_count(output)
    assert 20 <= finished < 152 and not output.exists()

    resume = run_cli("--input", root, "--output", output, "--batch-size", 2, "--threads", 1)
    poll(lambda: journal.read_bytes() != before)  # the resume's first write
    resume.send_signal(signal.SIGKILL)
    resume.wait()
    assert journal.read_bytes().startswith(before)  # appended to, not truncated
    assert journal_count(output) > finished

    last = run_cli("--input", root, "--output", output)
    assert last.wait(timeout=120) == 0, last.stderr.read()
    rows = read_csv(output)
    assert len(rows) == len({r["path"] for r in rows}) == 152  # every image once
    assert {r["path"]: r["label"] for r in rows} == {r["path"]: r["label"] for r in read_csv(reference)}


def test_second_run_on_the_same_output_stops_at_once(scored, tmp_path):
    """Issue 14 defect 2: one writer per output; the second run exits with a clear message
    while the first goes on to write a complete CSV."""
    root, reference, _ = scored
    output = tmp_path / "predictions.csv"
    first = run_cli("--input", root, "--output", output, "--batch-size", 1, "--threads", 1)
    poll(lambda: journal_path(output).exists())  # the first run holds the lock and is scoring
    second = run_cli("--input", root, "--output", output)
    assert second.wait(timeout=60) == 2
    err = second.stderr.read()
    assert err.startswith("error: another batch_predict run is writing") and "Traceback" not in err
    assert first.poll() is None  # the second run did not wait for the first
    assert first.wait(timeout=120) == 0, first.stderr.read()
    rows = read_csv(output)
    assert len(rows) == len({r["path"] for r in rows}) == 152
    assert {r["path"]: r["label"] for r in rows} == {r["path"]: r["label"] for r in read_csv(reference)}


# Names a file system allows that broke the CSV before (issue 14 defect 4), as bytes.
HOSTILE_NAMES = [b"caf\xe9 latin-1.jpg", b"\xff\xfe.jpg", b"line\nbreak.jpg", b"carriage\rreturn.jpg",
                 b"=SUM(1+1)*cmd.jpg", b"+1.jpg", b"-2.jpg", b"@SUM(A1).jpg", b"'quoted.jpg",
                 b"back\\slash \\x41.jpg", b"tab\t.jpg", b"\tlead.jpg", "日本語.jpg".encode()]


def test_any_file_name_is_scored_written_and_resumed(pss_dir, predictor, tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    image = sorted((pss_dir / "test" / "sushi").glob("*.jpg"))[0]
    for name in HOSTILE_NAMES:
        os.symlink(image, os.path.join(os.fsencode(root), name))
    output = tmp_path / "predictions.csv"
    summary = score_folder(predictor, root, output, progress=False)
    assert (summary["scored"], summary["errors"]) == (len(HOSTILE_NAMES), 0)

    text = output.read_bytes().decode("utf-8")  # valid UTF-8 whatever the names
    assert len(text.splitlines()) == 1 + len(HOSTILE_NAMES)  # one line a row: no raw CR/LF in cells
    cells = read_csv(output)
    assert {c["label"] for c in cells} == {predictor.predict(image)["label"]}
    for cell in cells:  # nothing a spreadsheet would evaluate (OWASP: = + - @ tab CR)
        assert not cell["path"].startswith(("=", "+", "-", "@", "\t", "\r")), cell["path"]
    assert {c["path"] for c in cells} >= {"'=SUM(1+1)*cmd.jpg", "'+1.jpg", "'-2.jpg", "'@SUM(A1).jpg",
                                          "''quoted.jpg", "caf\\xe9 latin-1.jpg", "line\\nbreak.jpg",
                                          "back\\\\slash \\\\x41.jpg", "\\tlead.jpg", "日本語.jpg"}
    # Read back, every name is the exact bytes on disk, so a re-run recognises every row.
    assert sorted(os.fsencode(r["path"]) for r in read_output(output)) == sorted(HOSTILE_NAMES)
    again = score_folder(predictor, root, output, progress=False)
    assert (again["skipped"], again["scored"]) == (len(HOSTILE_NAMES), 0)
    assert len(read_csv(output)) == len(HOSTILE_NAMES)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b),
                           min_size=1, max_size=3))
def test_every_possible_name_round_trips_through_the_csv(parts):
    """The property behind the test above: any path of bytes a POSIX file system allows comes back
    exact from the CSV, in one line, with no cell starting like a formula."""
    path = b"/".join(parts)
    buffer = io.StringIO(newline="")
    name = os.fsdecode(path)
    csv.DictWriter(buffer, fieldnames=FIELDS).writerow(csv_cells({**dict.fromkeys(FIELDS, ""), "path": name,
                                                                  "error": name}))
    line = buffer.getvalue()
    assert line.endswith("\r\n") and "\n" not in line[:-2] and "\r" not in line[:-2]
    cells = next(csv.DictReader(io.StringIO(line, newline=""), fieldnames=FIELDS))
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells.values())
    assert os.fsencode(row_from_cells(cells)["path"]) == path


@contextlib.contextmanager
def as_user_nobody():
    """Root reads any file, so as root the run drops its effective user (the interpreter lives
    under /root, unreachable to nobody, so a subprocess could not start as nobody)."""
    if os.geteuid() != 0:
        yield
        return
    # Modules the run imports lazily, loaded now while they are readable.
    import fcntl  # noqa: F401

    import tqdm.auto  # noqa: F401

    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_permission_denied_is_reported_as_such_without_the_path(pss_dir, predictor, capsys, caplog):
    """Issue 14 defect 8: not "damaged or truncated", and no absolute path in the row or the log."""
    base = Path(tempfile.mkdtemp())  # not pytest's tmp_path: that is private to root
    try:
        root = base / "photos"
        root.mkdir()
        for image in sorted((pss_dir / "test" / "steak").glob("*.jpg"))[:2]:
            shutil.copy(image, root / image.name)
        secret = root / "secret.jpg"
        shutil.copy(image, secret)
        secret.chmod(0)
        for folder in (base, root):
            folder.chmod(0o777)
        with as_user_nobody():
            summary = score_folder(predictor, root, base / "predictions.csv", progress=False)
        rows = {r["path"]: r for r in read_csv(base / "predictions.csv")}
        assert (summary["scored"], summary["errors"], len(rows)) == (3, 1, 3)
        assert rows["secret.jpg"]["error"] == "The file cannot be read: Permission denied."
        logged = caplog.text + "".join(capsys.readouterr())
        assert str(base) not in rows["secret.jpg"]["error"] + logged
    finally:
        shutil.rmtree(base)


def test_cli_reports_throughput(pss_dir, tmp_path, capsys):
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=1)
    output = tmp_path / "predictions.csv"
    assert main(["--input", str(root), "--output", str(output), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scored 3 images" in out and "images/s" in out
    assert len(read_csv(output)) == 3
    assert main(["--input", str(root), "--output", str(output), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("make_input, extra, message", [
    (lambda d: d.mkdir(), (), "no images found"),
    (lambda d: None, (), "input folder not found"),
    (lambda d: d.mkdir(), ("--actors", "2"), "need --engine ray"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, make_input, extra, message):
    folder = tmp_path / "photos"
    make_input(folder)
    run = run_cli("--input", folder, "--output", tmp_path / "out.csv", *extra)
    assert run.wait(timeout=60) == 2
    err = run.stderr.read()
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_refuses_to_overwrite_a_foreign_csv(pss_dir, tmp_path):
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=1)
    foreign = tmp_path / "sales.csv"
    foreign.write_text("date,amount\n2024-01-01,3\n")
    run = run_cli("--input", root, "--output", foreign)
    assert run.wait(timeout=60) == 2
    assert "not a batch_predict CSV" in run.stderr.read()
    assert foreign.read_text() == "date,amount\n2024-01-01,3\n"


def test_batch_module_imports_neither_ray_nor_torch():
    code = ("import sys, going_modular.deploy.batch_predict, going_modular.deploy.batch.ray_engine; "
            "print(sorted(m for m in ('ray', 'torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prediction_log_gets_one_record_per_scored_row_with_the_model_id(pss_dir, predictor, tmp_path):
    """--prediction-log: one JSON line per prediction (not for unreadable files), id = the row's path,
    the model's id and the image statistics; the CSV names the same model on every row."""
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=4)
    (root / "pizza" / "empty.jpg").write_bytes(b"")
    output, log = tmp_path / "predictions.csv", tmp_path / "log" / "predictions.jsonl"
    assert main(["--input", str(root), "--output", str(output), "--prediction-log", str(log), "--no-progress"]) == 0
    rows = read_csv(output)
    good = [r for r in rows if not r["error"]]
    assert len(rows) == 13 and len(good) == 12
    assert {(r["model_id"], r["precision"]) for r in good} == {(predictor.model_id, predictor.precision)}
    records = read_log(log).records
    assert sorted(r["id"] for r in records) == sorted(r["path"] for r in good)
    by_id = {r["id"]: r for r in records}
    for row in good:
        record = by_id[row["path"]]
        assert record["mode"] == "batch" and record["model_id"] == predictor.model_id
        assert record["label"] == row["label"] and record["prob"] == pytest.approx(float(row["prob"]), abs=1e-4)
        assert record["format"] == "JPEG" and record["width"] > 0 and 0 < record["brightness"] < 255


def test_an_output_from_before_the_model_columns_still_resumes(pss_dir, predictor, tmp_path):
    """A CSV written without model_id/precision is resumed (its rows kept, their model unknown: empty)
    and rewritten with every column."""
    from going_modular.deploy.batch.job import LEGACY_FIELDS

    root = link_tree(pss_dir / "test", tmp_path / "input", limit=2)
    output = tmp_path / "predictions.csv"
    score_folder(predictor, root, output, progress=False)
    rows = read_csv(output)
    with open(output, "w", newline="", encoding="utf-8") as f:  # as an older version wrote it, one row short
        writer = csv.DictWriter(f, fieldnames=LEGACY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[1:])
    summary = score_folder(predictor, root, output, progress=False)
    assert summary["scored"] == 1 and summary["skipped"] == len(rows) - 1
    again = {r["path"]: r for r in read_csv(output)}
    assert again[rows[0]["path"]]["model_id"] == predictor.model_id
    assert all(again[r["path"]]["model_id"] == "" for r in rows[1:])
