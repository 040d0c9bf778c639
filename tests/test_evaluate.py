"""`python -m going_modular.evaluate`: the shipped checkpoints' accuracy on real test splits."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from going_modular import evaluate
from going_modular.data_setup import DataError

BIG = Path(__file__).resolve().parents[1] / "checkpoints" / "effnet_lite0_foodvision_big.pth"


def test_shipped_mini_checkpoint_is_at_least_95_percent_on_the_course_test_split(
        mini_checkpoint, shared_data, tmp_path, monkeypatch, capsys):
    # The default --data: the course zip, fetched by download_data from the mirror, as a learner would.
    monkeypatch.setenv("FOODVISION_DATA_MIRROR", str(shared_data))
    results = evaluate.run_evaluation(evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(mini_checkpoint), "--data-dir", str(tmp_path), "--device", "cpu"]))
    assert results["n_images"] == 150 and results["accuracy"] >= 0.95
    assert {c: r["n"] for c, r in results["per_class"].items()} == {"pizza": 46, "steak": 58, "sushi": 46}
    assert results["correct"] == sum(r["correct"] for r in results["per_class"].values())
    out = capsys.readouterr().out
    assert "test images: 150" in out and f"accuracy: {results['accuracy']:.2%}" in out
    assert all(name in out for name in ("pizza", "steak", "sushi"))


def test_big_checkpoint_on_a_food101_subset(shared_data):
    """A 101-way head scored on the 23-class subset: predictions are compared by class name."""
    args = evaluate.get_args_parser().parse_args(["--model", str(BIG), "--food101-root",
                                                  str(shared_data / "food101_mini"), "--subset", "0.1"])
    results = evaluate.run_evaluation(args)
    assert results["n_images"] == 46 and len(results["per_class"]) == 23  # 2 test photos of each dish
    assert results["accuracy"] > 0.4  # 23 dishes: chance is 4% (1% among its 101 outputs)


def test_bad_checkpoint_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "going_modular.evaluate", "--checkpoint", str(tmp_path / "no.pth")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'no.pth'}"


def test_data_with_classes_the_model_does_not_know_is_refused(mini_checkpoint, synthetic_dir):
    with pytest.raises(DataError, match="classes the model was not built for"):
        evaluate.main(["--checkpoint", str(mini_checkpoint), "--data", str(synthetic_dir)])
