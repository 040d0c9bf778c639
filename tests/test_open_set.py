"""The shipped bundles know what they don't know: the open-set score in the graph, its threshold in
the metadata, `known` in every result, and its rates on real photos that neither fitted nor
calibrated it (the sets of benchmarks/open_set.py, smaller)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.open_set import BIG, MINI, food101_test, in_menu_photos, non_food_photos, score
from demo_support import ROOT, clean_env, non_food_photo
from going_modular.deploy.bundle import OOD_NAME, OUTPUT_NAME
from going_modular.deploy.predictor import OnnxPredictor

OFF_MENU_PER_CLASS = 5  # 155 photos of the 31 other dishes: enough to measure, quick to score


@pytest.fixture(scope="module")
def mini():
    return OnnxPredictor(MINI)


@pytest.fixture(scope="module")
def big():
    return OnnxPredictor(BIG)


@pytest.fixture(scope="module")
def non_food():
    return list(non_food_photos().values())


def test_bundles_carry_the_score_as_a_graph_output_and_the_threshold_as_metadata(mini, big):
    for predictor in (mini, big):
        assert [o.name for o in predictor.session.get_outputs()] == [OUTPUT_NAME, OOD_NAME]
        open_set = predictor.meta["open_set"]
        assert predictor.ood_threshold == open_set["threshold"] == 1.0
        assert open_set["cross_validated"]["known_flagged"] <= 0.05  # calibrated on training photos only
    assert mini.meta["open_set"]["other_classes"] == 31 and big.meta["open_set"]["other_classes"] == 0


def test_every_result_says_whether_the_photo_is_known(mini, pss_dir):
    photos = [pss_dir / "test/pizza/2111981.jpg", non_food_photo("astronaut")]
    results = mini.predict_batch(photos, top_k=1) + [mini.predict(photos[0])]
    for result in results:
        assert set(result) == {"label", "prob", "probs", "seconds", "known", "ood_score"}
        assert result["known"] is (result["ood_score"] <= mini.ood_threshold)
    assert [r["known"] for r in results] == [True, False, True]


def test_in_menu_photos_stay_known_and_right(mini, shared_data):
    images, labels = in_menu_photos(shared_data)
    probs, ood = score(mini, images)
    assert len(images) == 150
    assert np.mean(ood > mini.ood_threshold) <= 0.05
    assert np.mean(np.array(mini.class_names)[probs.argmax(1)] == np.array(labels)) >= 0.95


def test_most_other_dishes_are_flagged(mini, shared_data):
    paths, names = food101_test(shared_data, exclude=mini.class_names)
    sample = [p for i, p in enumerate(paths) if names[:i].count(names[i]) < OFF_MENU_PER_CLASS]
    _, ood = score(mini, sample)
    assert len(sample) == 155 and np.mean(ood > mini.ood_threshold) >= 0.55  # 66% on all 660 (benchmark)


def test_non_food_photos_are_flagged_by_both_demos(mini, big, non_food):
    for predictor in (mini, big):
        _, ood = score(predictor, non_food)
        assert np.mean(ood > predictor.ood_threshold) >= 0.9, predictor


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
    result = subprocess.run([sys.executable, "-m", "going_modular.deploy.stream", "--source", str(frames),
                             "--output", str(out), "--block"], cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    known = [json.loads(line).get("known") for line in out.read_text().splitlines()]
    assert known == [True, False]
