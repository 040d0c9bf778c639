"""The demos' "Wrong? Tell us" feedback and their prediction log, called directly: real photos, the
real FoodVision Mini predictor, the dataset folder on disk (its bound, its join to the log), bad input."""
from __future__ import annotations

import json

import gradio as gr
import pytest
from demo_support import PSS_TEST

from going_modular.deploy import feedback, gradio_app
from going_modular.deploy.feedback import NOT_FOOD, FeedbackError, FeedbackStore
from going_modular.deploy.monitor.log import PredictionLog, read_log


@pytest.fixture(scope="module")
def mini_app():
    from demos.foodvision_mini import app
    return app


@pytest.fixture(scope="module")
def photos(pss_dir):
    """The three real test photos FoodVision Mini gets right: {class: path}."""
    return {cls: pss_dir / "test" / rel for cls, rel in PSS_TEST.items()}


def answer(mini_app, image, prediction_log=None) -> dict:
    """What the demo keeps of its last answer (the State a report is made from)."""
    _, record = gradio_app.predict_and_record(mini_app.predictor, str(image), 3, prediction_log)
    return {"image": str(image), **record}


def test_a_report_stores_the_photo_the_prediction_and_the_correction_joined_to_the_log(mini_app, photos, tmp_path):
    with PredictionLog(tmp_path / "predictions.jsonl") as log:
        last = answer(mini_app, photos["steak"], log)
    logged = read_log(tmp_path / "predictions.jsonl").records
    assert [r["id"] for r in logged] == [last["id"]] and logged[0]["mode"] == "demo"
    assert logged[0]["model_id"] == mini_app.predictor.model_id and logged[0]["brightness"] > 0

    store = FeedbackStore(tmp_path / "flagged")
    thanks = gradio_app.send_feedback(store, last, "sushi", mini_app.predictor.class_names)
    assert "steak" in thanks and "sushi" in thanks and last["id"] in thanks
    (record,) = store.records()
    assert record["id"] == last["id"] and record["correction"] == "sushi" and record["label"] == "steak"
    assert record["model_id"] == mini_app.predictor.model_id and record["precision"] == "int8"
    assert record["top3"][0][0] == "steak" and record["known"] is True
    assert (store.root / record["image"]).read_bytes() == photos["steak"].read_bytes()  # the upload, unchanged
    assert record["image"] == f"images/{last['id']}.jpg"


def test_corrections_are_class_names_human_names_or_not_food(mini_app, photos, tmp_path):
    store = FeedbackStore(tmp_path)
    names = mini_app.predictor.class_names
    assert feedback.choices(names) == [("pizza", "pizza"), ("steak", "steak"), ("sushi", "sushi"),
                                       ("not food", NOT_FOOD)]
    big = ["hot_dog", "ice_cream"]
    assert feedback.correction_name("Ice Cream", big) == "ice_cream"
    assert feedback.correction_name("not food", big) == NOT_FOOD
    record = store.save(answer(mini_app, photos["pizza"]), "not food", names)
    assert record["correction"] == NOT_FOOD


@pytest.mark.parametrize(("last", "correction", "message"), [
    (None, "sushi", "no prediction to correct yet: predict a photo first"),
    ("photo", "ramen", "unknown dish 'ramen': pick one of the model's 3 dishes or not food"),
    ("photo", "", "pick what the photo really shows"),
    ("photo", None, "pick what the photo really shows"),
])
def test_bad_reports_get_one_clear_line_and_save_nothing(last, correction, message, mini_app, photos, tmp_path):
    store = FeedbackStore(tmp_path / "flagged")
    prediction = answer(mini_app, photos["pizza"]) if last == "photo" else None
    with pytest.raises(FeedbackError, match=message):
        store.save(prediction, correction, mini_app.predictor.class_names)
    with pytest.raises(gr.Error, match=message):  # the page shows the same line
        gradio_app.send_feedback(store, prediction, correction, mini_app.predictor.class_names)
    assert store.records() == [] and store.size() == 0


def test_a_photo_deleted_from_the_upload_cache_is_explained(mini_app, photos, tmp_path):
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(photos["sushi"].read_bytes())
    last = answer(mini_app, upload)
    upload.unlink()  # Gradio deletes uploads after 10 minutes
    with pytest.raises(FeedbackError, match="no longer on the server"):
        FeedbackStore(tmp_path / "flagged").save(last, "steak", mini_app.predictor.class_names)


def test_reporting_the_same_prediction_again_replaces_the_report(mini_app, photos, tmp_path):
    store = FeedbackStore(tmp_path)
    last = answer(mini_app, photos["pizza"])
    store.save(last, "steak", mini_app.predictor.class_names)
    store.save(last, "sushi", mini_app.predictor.class_names)
    assert [r["correction"] for r in store.records()] == ["sushi"]
    assert len(list((tmp_path / feedback.IMAGES).iterdir())) == 1


def test_past_the_size_bound_the_oldest_reports_are_dropped(mini_app, photos, tmp_path):
    sizes = {cls: p.stat().st_size for cls, p in photos.items()}
    # Room for any two of the photos and their records, never three.
    budget = sum(sorted(sizes.values())[1:]) + 2_000
    assert budget < sum(sizes.values())
    store = FeedbackStore(tmp_path, max_bytes=budget)
    reports = []
    for cls in ("pizza", "steak", "sushi"):
        last = answer(mini_app, photos[cls])
        store.save(last, NOT_FOOD, mini_app.predictor.class_names)
        reports.append(last["id"])
        assert store.size() <= budget
    assert [r["id"] for r in store.records()] == reports[1:]  # pizza's, the oldest, made room
    assert sorted(p.stem for p in (tmp_path / feedback.IMAGES).iterdir()) == sorted(reports[1:])

    by_count = FeedbackStore(tmp_path / "by_count", max_records=2)
    kept = []
    for cls in ("pizza", "steak", "sushi"):
        last = answer(mini_app, photos[cls])
        by_count.save(last, cls, mini_app.predictor.class_names)
        kept.append(last["id"])
    assert [r["id"] for r in by_count.records()] == kept[1:]


def test_a_photo_larger_than_the_whole_bound_is_refused(mini_app, photos, tmp_path):
    store = FeedbackStore(tmp_path, max_bytes=photos["steak"].stat().st_size // 2)
    with pytest.raises(FeedbackError, match="larger than the feedback folder's whole budget"):
        store.save(answer(mini_app, photos["steak"]), "pizza", mini_app.predictor.class_names)
    assert store.records() == []


def test_an_unwritable_feedback_folder_is_one_line_and_predictions_go_on(mini_app, photos, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the folder should be")
    store = FeedbackStore(blocker / "flagged")
    with pytest.raises(gr.Error, match="could not be saved on this server"):
        gradio_app.send_feedback(store, answer(mini_app, photos["pizza"]), "pizza", mini_app.predictor.class_names)
    assert answer(mini_app, photos["sushi"])["label"] == "sushi"


def test_feedback_and_log_settings_come_from_the_environment(tmp_path):
    store = feedback.feedback_from_env({"FOODVISION_FEEDBACK_DIR": str(tmp_path), "FOODVISION_FEEDBACK_MAX_MB": "2"})
    assert store.root == tmp_path and store.max_bytes == 2 * 2**20
    assert feedback.feedback_from_env({}).root.name == feedback.DEFAULT_DIR
    with pytest.raises(FeedbackError, match="not a number of megabytes"):
        feedback.feedback_from_env({"FOODVISION_FEEDBACK_MAX_MB": "lots"})


def test_the_answer_says_which_model_answered(mini_app, photos):
    _, record = gradio_app.predict_and_record(mini_app.predictor, str(photos["sushi"]), 3)
    line = gradio_app.model_line(mini_app.predictor, record["id"])
    assert line == f"model {mini_app.predictor.model_id} (int8) · prediction {record['id']}"
    assert record["width"] is None  # no log: no image statistics taken
    # The course's predict keeps its shape: ({class: prob} top 3, seconds).
    probs, seconds = mini_app.predict(str(photos["sushi"]))
    assert next(iter(probs)) == "sushi" and isinstance(seconds, float)
    assert json.dumps(record)  # a log line


def test_a_report_names_its_prediction_by_id_among_the_latest(mini_app, photos):
    recent = gradio_app.RecentPredictions(size=2)
    lasts = [answer(mini_app, photos[cls]) for cls in ("pizza", "steak", "sushi")]
    for last in lasts:
        recent.add(last)
    assert recent.lookup(gradio_app.model_line(mini_app.predictor, lasts[2]["id"])) is lasts[2]  # the page's line
    assert recent.lookup(lasts[1]["id"]) is lasts[1]  # or the bare id (API clients)
    assert recent.lookup("") is None and recent.lookup(None) is None  # nothing predicted yet
    with pytest.raises(FeedbackError, match=f"prediction {lasts[0]['id']} is not one of this demo's latest 2"):
        recent.lookup(lasts[0]["id"])  # the oldest, forgotten


def test_a_prediction_id_that_is_a_path_is_refused(mini_app, photos, tmp_path):
    last = {**answer(mini_app, photos["pizza"]), "id": "../../etc/cron.d/x"}
    with pytest.raises(FeedbackError, match="is not a plain id"):
        FeedbackStore(tmp_path / "flagged").save(last, "pizza", mini_app.predictor.class_names)
    assert not (tmp_path / "etc").exists() and FeedbackStore(tmp_path / "flagged").records() == []
