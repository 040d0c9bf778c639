"""The Ray engine of batch scoring on a local 2-CPU Ray: the real test split plus damaged files,
every row compared with the local engine, resume after an interrupted run, a 2-actor pool that
must not deadlock, a pyarrow URI input, and the CLI joining a running cluster. Each Ray job costs
seconds of actor start-up, so the module runs three and makes each one count."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from going_modular.deploy.batch import job
from going_modular.deploy.batch.job import BatchError, read_output
from going_modular.deploy.batch.local import score_folder
from going_modular.deploy.batch.ray_engine import pool_size, score_folder_ray
from going_modular.deploy.monitor.log import read_log
from going_modular.deploy.predictor import DEFAULT_BUNDLE, load_predictor

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module, as CI has it: 2 CPUs, a small object store, no dashboard."""
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(pss_dir, tmp_path_factory) -> Path:
    """The real test split (150 images, linked) plus a truncated JPEG, an empty file and text named .jpg."""
    root = tmp_path_factory.mktemp("ray") / "input"
    for image in sorted((pss_dir / "test").glob("*/*.jpg")):
        (root / image.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(image, root / image.parent.name / image.name)
    real = next((pss_dir / "test" / "pizza").glob("*.jpg")).read_bytes()
    (root / "pizza" / "truncated.jpg").write_bytes(real[: len(real) // 3])
    (root / "steak" / "empty.jpg").write_bytes(b"")
    (root / "sushi" / "notes.jpg").write_text("not an image at all")
    return root


@pytest.fixture(scope="module")
def local_rows(folder, tmp_path_factory) -> dict:
    """The local engine's rows for the same folder: the reference every Ray row must match."""
    output = tmp_path_factory.mktemp("local") / "predictions.csv"
    score_folder(load_predictor(DEFAULT_BUNDLE), folder, output, progress=False)
    return {r["path"]: r for r in read_output(output)}


def assert_same_rows(rows: list[dict], reference: dict) -> None:
    """Every file once, and every cell but `seconds` identical to the local engine's row."""
    assert len(rows) == len({r["path"] for r in rows}) == len(reference)
    for row in rows:
        assert {**row, "seconds": ""} == {**reference[row["path"]], "seconds": ""}


def test_ray_engine_resumes_an_interrupted_run_and_gives_the_local_rows(ray_session, folder, local_rows, tmp_path,
                                                                       monkeypatch):
    """Ctrl-C in the driver after two batches: those rows are published. The re-run, with the
    2-actor pool that would deadlock on 2 CPUs if actors took every CPU, scores the rest only,
    and every row equals the local engine's."""
    output = tmp_path / "predictions.csv"
    journalled = []
    real_append = job.append_journal

    def interrupt_on_third_batch(path, rows):
        if len(journalled) == 2:
            raise KeyboardInterrupt
        journalled.append(len(rows))
        real_append(path, rows)

    monkeypatch.setattr(job, "append_journal", interrupt_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        score_folder_ray(DEFAULT_BUNDLE, folder, output, progress=False)
    monkeypatch.undo()
    finished = read_output(output)
    assert len(finished) == sum(journalled) > 0
    assert not job.journal_path(output).exists()

    summary = score_folder_ray(DEFAULT_BUNDLE, folder, output, actors=2, batch_size=4, progress=False)
    assert (summary["total"], summary["skipped"], summary["scored"]) == (153, len(finished), 153 - len(finished))
    rows = read_output(output)
    assert_same_rows(rows, local_rows)
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert "damaged or truncated" in errors["pizza/truncated.jpg"]
    assert errors["steak/empty.jpg"] == "The file is empty."
    assert "not an image" in errors["sushi/notes.jpg"]
    again = score_folder_ray(DEFAULT_BUNDLE, folder, output, progress=False)
    assert (again["skipped"], again["scored"]) == (153, 0)


def test_pool_leaves_a_cpu_for_the_read_tasks():
    assert pool_size(2, None) == (1, 1.0)
    assert pool_size(2, 2) == (2, 0.5)  # 2 actors x 1 CPU on 2 CPUs would starve the readers
    assert pool_size(64, None) == (57, 1.0)  # a tenth of a big cluster reads
    assert pool_size(10, 18) == (18, 0.5)
    assert pool_size(1, None) == (1, 0.5)
    with pytest.raises(BatchError, match="--actors must be at least 1, got 0"):
        pool_size(8, 0)  # not the default in disguise


def test_cli_runs_on_a_running_cluster_from_a_uri(ray_session, folder, local_rows, tmp_path):
    """--engine ray --address: the CLI joins a cluster (the module's Ray), ships the package and
    the model to it, and reads the input through pyarrow (file:// here; s3:// and gs:// alike).
    --prediction-log: the driver logs what the actors scored, one record per row, with the model id."""
    output, log = tmp_path / "predictions.csv", tmp_path / "predictions.jsonl"
    run = subprocess.run([sys.executable, "-m", "going_modular.deploy.batch_predict", "--engine", "ray",
                          "--address", ray_session, "--input", (folder / "steak").as_uri(), "--output", str(output),
                          "--no-progress", "--prediction-log", str(log)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scored 59 images (1 unreadable" in run.stdout
    assert_same_rows(read_output(output), {n.removeprefix("steak/"): {**r, "path": n.removeprefix("steak/")}
                                           for n, r in local_rows.items() if n.startswith("steak/")})
    records = read_log(log).records
    good = {r["path"]: r for r in read_output(output) if not r["error"]}
    assert sorted(r["id"] for r in records) == sorted(good) and len(records) == 58
    predictor = load_predictor(DEFAULT_BUNDLE)
    for record in records:
        assert record["mode"] == "batch" and record["model_id"] == good[record["id"]]["model_id"] == predictor.model_id
        assert record["label"] == good[record["id"]]["label"] and record["format"] == "JPEG"
