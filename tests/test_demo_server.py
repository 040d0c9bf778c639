"""The demos as users run them: `python demos/<demo>/app.py` in a subprocess on 127.0.0.1, called over
real HTTP with gradio_client: real photos, every bad input, no internet, clean Ctrl-C shutdown."""
from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from demo_support import (
    NETWORK_AUDIT,
    NOT_PIZZA_STEAK_SUSHI,
    PSS_TEST,
    ROOT,
    bad_inputs,
    clean_env,
    free_port,
    running_app,
    user_images,
)
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from going_modular.deploy.monitor.log import read_log


@pytest.fixture(scope="module")
def mini_server(tmp_path_factory):
    """FoodVision Mini started as `python app.py --port N`, every socket it opens logged, writing
    its prediction log and feedback into `app.monitoring` (a tmp folder)."""
    port, monitoring = free_port(), tmp_path_factory.mktemp("monitoring")
    env = clean_env(FOODVISION_PREDICTION_LOG=str(monitoring / "predictions.jsonl"),
                    FOODVISION_FEEDBACK_DIR=str(monitoring / "flagged"))
    with running_app(["-c", NETWORK_AUDIT, "demos/foodvision_mini/app.py", "--port", str(port)], env=env,
                     port=port) as app:
        app.monitoring = monitoring
        yield app
    assert app.proc.returncode == 0, f"unclean shutdown:\n{app.log()}"


@pytest.fixture(scope="module")
def mini_client(mini_server):
    return Client(mini_server.url, verbose=False)


def test_named_predict_endpoint_is_published(mini_client):
    api = mini_client.view_api(print_info=False, return_format="dict")
    assert "/predict" in api["named_endpoints"]
    assert len(api["named_endpoints"]["/predict"]["returns"]) == 4  # label, seconds, verdict, model


def test_real_test_images_get_their_label_with_high_confidence(mini_client, pss_dir):
    for cls, rel in PSS_TEST.items():
        label, seconds, verdict, model = mini_client.predict(handle_file(pss_dir / "test" / rel), api_name="/predict")
        assert label["label"] == cls and label["confidences"][0]["confidence"] > 0.95
        assert len(label["confidences"]) == 3 and re.fullmatch(r"\d+\.\d{3} s", seconds) and verdict.startswith(cls)
        assert re.fullmatch(r"model [0-9a-f]{12} \(int8\) · prediction [0-9a-f]{16}", model)


def test_each_prediction_is_logged_and_feedback_on_it_is_saved_over_http(mini_server, mini_client, pss_dir):
    """A client reports a wrong answer through the "/feedback" endpoint, naming the prediction by its id:
    the photo, the prediction and the correction land in the dataset folder, joined to the log by id."""
    steak = pss_dir / "test" / PSS_TEST["steak"]
    _, _, verdict, model = mini_client.predict(handle_file(steak), api_name="/predict")
    prediction_id = model.rsplit(" ", 1)[1]
    thanks = mini_client.predict(prediction_id, "Pizza", api_name="/feedback")  # a human spelling is fine
    assert prediction_id in thanks and "pizza" in thanks
    reports = (mini_server.monitoring / "flagged/feedback.jsonl").read_text().splitlines()
    (report,) = [json.loads(line) for line in reports]
    assert (report["id"], report["label"], report["correction"]) == (prediction_id, "steak", "pizza")
    assert (mini_server.monitoring / "flagged" / report["image"]).read_bytes() == steak.read_bytes()
    deadline = time.monotonic() + 10  # the log is written off the serving path, within a second
    logged = []
    while prediction_id not in {r["id"] for r in logged} and time.monotonic() < deadline:
        time.sleep(0.2)
        if (mini_server.monitoring / "predictions.jsonl").is_file():
            logged = read_log(mini_server.monitoring / "predictions.jsonl").records
    (record,) = [r for r in logged if r["id"] == prediction_id]
    assert record["mode"] == "demo" and record["model_id"] == report["model_id"] == model.split()[1]
    assert record["label"] == "steak" and record["width"] > 0 and record["brightness"] > 0
    with pytest.raises(AppError, match="unknown dish 'ramen': pick one of the model's 3 dishes or not food"):
        mini_client.predict(model, "ramen", api_name="/feedback")  # the whole Model line names it too
    with pytest.raises(AppError, match="prediction 0123456789abcdef is not one of this demo's latest"):
        mini_client.predict("0123456789abcdef", "steak", api_name="/feedback")


def test_every_user_format_is_predicted_over_http(mini_client, shared_data, tmp_path):
    for name, path in user_images(shared_data / "custom_images" / "pizza-dad.jpeg", tmp_path).items():
        label, _, verdict, _ = mini_client.predict(handle_file(path), api_name="/predict")
        if name != "tiny.png":  # 8x8 pixels: a prediction, but no food left to recognise
            assert label["label"] == "pizza", name


def test_bad_inputs_get_a_clear_message_not_a_traceback(mini_server, mini_client, shared_data, tmp_path):
    for path, message in bad_inputs(shared_data / "custom_images" / "pizza-dad.jpeg", tmp_path).values():
        with pytest.raises(AppError, match=message):
            mini_client.predict(None if path is None else handle_file(path), api_name="/predict")
    # The server keeps serving, and logged no traceback for the users' mistakes.
    sushi = ROOT / "demos/foodvision_mini/examples/sushi.jpg"
    label, *_ = mini_client.predict(handle_file(sushi), api_name="/predict")
    assert label["label"] == "sushi"
    assert "Traceback" not in mini_server.log()


def test_oversized_upload_is_refused_before_it_reaches_the_model(mini_client, tmp_path):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(51 * 2**20)  # over the demo's 50 MB limit (a sparse file: no disk used)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        mini_client.predict(handle_file(huge), api_name="/predict")


def test_another_dish_is_something_else(mini_client, shared_data):
    image = shared_data / NOT_PIZZA_STEAK_SUSHI[0]
    _, _, verdict, _ = mini_client.predict(handle_file(image), api_name="/predict")
    assert verdict.startswith("Not pizza, steak or sushi — looks like something else")


def call_raw(url: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/predict as any HTTP client can, then read the result's event stream:
    (event name, its data)."""
    request = urllib.request.Request(f"{url}gradio_api/call/predict", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/predict/{event_id}", timeout=120) as r:
        lines = r.read().decode().splitlines()
    event = next(line.split(": ", 1)[1] for line in lines if line.startswith("event: "))
    return event, next(line.split(": ", 1)[1] for line in lines if line.startswith("data: "))


def test_a_server_path_instead_of_an_upload_gets_a_clear_message_and_one_log_line(mini_server):
    before = mini_server.log()
    event, data = call_raw(mini_server.url, [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}])
    assert event == "error" and "Only images uploaded to this demo can be predicted" in data
    logged = mini_server.log()[len(before):]
    assert "Traceback" not in logged and logged.count("refused a request naming a server file") == 1


def test_no_connection_beyond_localhost(mini_server, mini_client):
    """Start-up and serving use no internet: every socket the app opened went to 127.0.0.1."""
    mini_client.predict(handle_file(ROOT / "demos/foodvision_mini/examples/pizza.jpg"), api_name="/predict")
    hosts = set(re.findall(r"\[socket\.(?:connect|getaddrinfo)\] (\S+)", mini_server.log()))
    assert "127.0.0.1" in hosts, "the audit hook saw no sockets at all"  # Gradio checks its own URL
    assert hosts <= {"127.0.0.1", "localhost", "::1"}, hosts


def test_big_serves_top5_and_deletes_uploads_at_shutdown(shared_data, tmp_path):
    port, uploads = free_port(), tmp_path / "gradio"
    env = clean_env(GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(uploads))
    with running_app(["demos/foodvision_big/app.py"], env=env, port=port) as app:
        client = Client(app.url, verbose=False)
        hamburger = shared_data / "food101_mini/food-101/images/hamburger/2361393.jpg"
        label, _, verdict, _ = client.predict(handle_file(hamburger), api_name="/predict")
        assert label["label"] == "hamburger" and len(label["confidences"]) == 5 and verdict.startswith("hamburger")
        with pytest.raises(AppError, match="No image provided"):
            client.predict(None, api_name="/predict")
        assert "2361393.jpg" in [p.name for p in uploads.rglob("*.jpg")]  # the upload (beside the examples)
    assert app.proc.returncode == 0 and "Traceback" not in app.log()
    # delete_cache: the upload is gone at shutdown; only the demo's own example copies remain (Gradio keeps those).
    examples = {p.name for p in (ROOT / "demos/foodvision_big/examples").iterdir()}
    assert {p.name for p in uploads.rglob("*") if p.is_file()} <= examples
