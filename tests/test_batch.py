"""Batch scoring end to end on the real course test set (150 images) with the shipped model."""
from __future__ import annotations

import csv
import os

import pytest

from going_modular.deploy.batch_predict import FIELDS, main, score_folder
from going_modular.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(mini_checkpoint) -> Predictor:
    return Predictor(mini_checkpoint)


def link_tree(src, dst, limit=None):
    """Mirror src/<class>/<image> into dst with symlinks (the real images, without copying them)."""
    for cls_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls_dir.name).mkdir(parents=True)
        for image in sorted(cls_dir.iterdir())[:limit]:
            os.symlink(image, dst / cls_dir.name / image.name)
    return dst


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELDS
        return list(reader)


@pytest.fixture(scope="module")
def scored(pss_dir, predictor, tmp_path_factory):
    """The real test set plus one truncated JPEG and one non-image file, scored once."""
    root = link_tree(pss_dir / "test", tmp_path_factory.mktemp("batch") / "input")
    real = next((pss_dir / "test" / "pizza").glob("*.jpg")).read_bytes()
    (root / "pizza" / "corrupt.jpg").write_bytes(real[: len(real) // 3])
    (root / "README.txt").write_text("not an image: ignored")
    output = root.parent / "out" / "predictions.csv"
    summary = score_folder(predictor, root, output, batch_size=32, progress=False)
    return root, output, summary


def test_scores_every_image_with_high_accuracy(scored):
    root, output, summary = scored
    rows = read_csv(output)
    assert summary["total"] == summary["scored"] == len(rows) == 151
    assert summary["errors"] == 1 and summary["images_per_s"] > 0
    assert len({r["path"] for r in rows}) == 151
    good = [r for r in rows if not r["error"]]
    accuracy = sum(r["path"].split("/")[0] == r["label"] for r in good) / len(good)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f} from the CSV"
    for r in good:
        top3 = [item.split(":") for item in r["top3"].split(";")]
        assert [name for name, _ in top3][0] == r["label"] and len(top3) == 3
        assert float(top3[0][1]) == pytest.approx(float(r["prob"]), abs=1e-4)
        assert float(r["seconds"]) > 0


def test_corrupt_file_gets_an_error_row(scored):
    _, output, _ = scored
    row = next(r for r in read_csv(output) if r["path"] == "pizza/corrupt.jpg")
    assert "damaged or truncated" in row["error"] and row["label"] == row["prob"] == ""


def test_rerun_skips_rows_already_written(scored, predictor):
    root, output, _ = scored
    rows = read_csv(output)
    kept, removed = rows[:-10], rows[-10:]  # as if the last 10 images had never been scored
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(kept)
    summary = score_folder(predictor, root, output, batch_size=4, progress=False)
    assert (summary["skipped"], summary["scored"]) == (141, 10)
    after = read_csv(output)
    assert after[:141] == kept  # earlier rows untouched
    assert [(r["path"], r["label"]) for r in after[141:]] == [(r["path"], r["label"]) for r in removed]
    again = score_folder(predictor, root, output, progress=False)
    assert (again["skipped"], again["scored"]) == (151, 0)


def test_crash_journal_is_resumed_and_torn_row_redone(pss_dir, predictor, tmp_path):
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=2)  # 6 images
    output = tmp_path / "predictions.csv"
    first = score_folder(predictor, root, output, progress=False)
    rows = read_csv(output)
    # A hard kill leaves only the journal, its last row half written.
    journal = output.with_name(output.name + ".partial")
    lines = output.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:4]) + lines[4][:12])
    output.unlink()
    summary = score_folder(predictor, root, output, progress=False)
    assert first["scored"] == 6 and (summary["skipped"], summary["scored"]) == (3, 3)
    assert not journal.exists()
    assert sorted((r["path"], r["label"]) for r in read_csv(output)) == sorted((r["path"], r["label"]) for r in rows)


def test_interrupted_run_keeps_finished_batches(pss_dir, predictor, tmp_path, monkeypatch):
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=2)
    output = tmp_path / "predictions.csv"
    real_predict_batch = predictor.predict_batch
    calls = []

    def interrupt_on_second_batch(images, top_k=None):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict_batch(images, top_k=top_k)

    monkeypatch.setattr(predictor, "predict_batch", interrupt_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        score_folder(predictor, root, output, batch_size=2, progress=False)
    assert len(read_csv(output)) == 2  # the first batch, published whole
    assert not output.with_name(output.name + ".partial").exists()


def test_cli_reports_throughput(pss_dir, tmp_path, capsys, mini_checkpoint):
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=1)
    output = tmp_path / "predictions.csv"
    assert main(["--input", str(root), "--output", str(output), "--model", str(mini_checkpoint),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scored 3 images" in out and "images/s" in out
    assert len(read_csv(output)) == 3
    assert main(["--input", str(root), "--output", str(output), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d.mkdir(), "no images found"),
    (lambda d: None, "input folder not found"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys, make_input, message):
    folder = tmp_path / "photos"
    make_input(folder)
    assert main(["--input", str(folder), "--output", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_refuses_to_overwrite_a_foreign_csv(pss_dir, tmp_path, capsys):
    root = link_tree(pss_dir / "test", tmp_path / "input", limit=1)
    foreign = tmp_path / "sales.csv"
    foreign.write_text("date,amount\n2024-01-01,3\n")
    assert main(["--input", str(root), "--output", str(foreign)]) == 2
    assert "not a batch_predict CSV" in capsys.readouterr().err
    assert foreign.read_text() == "date,amount\n2024-01-01,3\n"
