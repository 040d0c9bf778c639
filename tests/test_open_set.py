"""The shipped bundles know what they don't know: the open-set score in the graph, its threshold in
the metadata (Mini's set on the clean menu_calibration photos), `known` in every result, and its
rates on real photos that neither fitted nor calibrated it (the sets of benchmarks/open_set.py)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from demo_support import ROOT, clean_env, non_food_photo

from going_modular.deploy.bundle import OOD_NAME, OUTPUT_NAME
from going_modular.deploy.image import IMAGE_SUFFIXES
from going_modular.deploy.predictor import OnnxPredictor

MINI = ROOT / "demos" / "foodvision_mini" / "foodvision_mini.int8.onnx"
BIG = ROOT / "demos" / "foodvision_big" / "foodvision_big.int8.onnx"


@pytest.fixture(scope="module")
def mini():
    return OnnxPredictor(MINI)


@pytest.fixture(scope="module")
def big():
    return OnnxPredictor(BIG)


def test_bundles_carry_the_score_as_a_graph_output_and_the_threshold_as_metadata(mini, big):
    for predictor in (mini, big):
        assert [o.name for o in predictor.session.get_outputs()] == [OUTPUT_NAME, OOD_NAME]
        assert predictor.ood_threshold == predictor.meta["open_set"]["threshold"]
    # Big: distance only (no other dishes exist), threshold by cross-validation on its training photos
    assert big.meta["open_set"]["other_classes"] == 0 and big.ood_threshold == 1.0
    assert big.meta["open_set"]["cross_validated"]["known_flagged"] <= 0.05
    # Mini: the reject head learnt food101_101's other 98 dishes; the threshold comes from clean photos
    assert mini.meta["open_set"]["other_classes"] == 98 and mini.meta["open_set"]["other_root"] == "food101_101"
    assert mini.meta["open_set"]["calibration_photos"]["folder"] == "menu_calibration"


def test_mini_threshold_flags_at_most_5_percent_of_the_clean_menu_photos(mini, shared_data, int8_slack):
    """Recomputed with the shipped bundle on ../shared/data/menu_calibration (150 official Food-101
    test photos of pizza, steak and sushi, hand-cleaned, used for this threshold only)."""
    photos = sorted(p for p in (shared_data / "menu_calibration").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    assert len(photos) == 150 and {p.parent.name for p in photos} == set(mini.class_names)
    flagged = sum(r["known"] is False for r in mini.predict_batch(photos))
    assert flagged <= 0.05 * len(photos) + int8_slack
    recorded = mini.meta["open_set"]["calibration_photos"]
    assert recorded["images"] == 150
    assert abs(round(recorded["flagged"] * 150) - flagged) <= int8_slack  # exactly as recorded on a VNNI CPU


def test_every_result_says_whether_the_photo_is_known(mini, pss_dir):
    photos = [pss_dir / "test/pizza/2111981.jpg", non_food_photo("astronaut")]
    results = mini.predict_batch(photos, top_k=1) + [mini.predict(photos[0])]
    for result in results:
        assert set(result) == {"label", "prob", "probs", "seconds", "known", "ood_score"}
        assert result["known"] is (result["ood_score"] <= mini.ood_threshold)
    assert [r["known"] for r in results] == [True, False, True]


@pytest.fixture(scope="module")
def benchmark(shared_data, tmp_path_factory) -> dict:
    """`python -m benchmarks.open_set` as a user runs it: its JSON results and its plot."""
    out = tmp_path_factory.mktemp("open_set")
    env = clean_env(PYTHONPATH=str(ROOT), FOODVISION_DATA_MIRROR=str(shared_data))
    result = subprocess.run([sys.executable, "-m", "benchmarks.open_set", "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| ood_score > 1 x threshold |" in result.stdout and (out / "open_set.png").stat().st_size > 10_000
    return json.loads((out / "open_set.json").read_text())


def test_shipped_threshold_keeps_menu_photos_and_flags_the_rest(benchmark, int8_slack):
    shipped = next(r for r in benchmark["mini"] if r["multiple"] == 1.0)
    assert benchmark["mini_info"]["counts"] == {"in_menu": 150, "off_menu_food": 1330, "non_food": 23}
    assert shipped["in_menu_flagged"] <= 0.05 + int8_slack / 150 and shipped["in_menu_acc"] >= 0.95
    assert shipped["non_food_flagged"] >= 0.9
    assert shipped["off_menu_food_flagged"] >= 0.6  # 64.1% measured: below the 80% target (README)
    old = next(r for r in benchmark["mini"] if r["multiple"] is None)
    assert shipped["off_menu_food_flagged"] > old["off_menu_food_flagged"] and \
        shipped["non_food_flagged"] > old["non_food_flagged"]


def test_big_flags_non_food_and_keeps_its_own_dishes(benchmark):
    big = benchmark["big"]
    assert (big["classes"], big["known_images"]) == (101, 1390)
    assert big["in_menu_flagged"] <= 0.05 and big["non_food_flagged"] >= 0.9


def test_batch_csv_has_a_known_column(tmp_path, pss_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "pizza.jpg").write_bytes((pss_dir / "test/pizza/2111981.jpg").read_bytes())
    non_food_photo("chelsea").save(photos / "cat.png")
    out = tmp_path / "predictions.csv"
    result = subprocess.run([sys.executable, "-m", "going_modular.deploy.batch_predict", "--input", str(photos),
                             "--output", str(out)], cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert (rows["pizza.jpg"]["known"], rows["cat.png"]["known"]) == ("True", "False")


def test_stream_lines_carry_known(tmp_path, pss_dir):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0.jpg").write_bytes((pss_dir / "test/sushi/2416569.jpg").read_bytes())
    non_food_photo("astronaut").save(frames / "1.jpg")
    out = tmp_path / "predictions.jsonl"
    command = [sys.executable, "-m", "going_modular.deploy.stream", "--source", str(frames), "--output", str(out),
               "--block"]
    result = subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    known = [json.loads(line).get("known") for line in out.read_text().splitlines()]
    assert known == [True, False]
