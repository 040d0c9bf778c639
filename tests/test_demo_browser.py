"""FoodVision Mini in a real browser: Debian's headless Chromium driven by Playwright.

Needs `apt-get install -y chromium` (`make browser`); never a browser downloaded by `playwright install`.
Screenshots go to test-artifacts/ (gitignored) for a human to look at.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from demo_support import ROOT, clean_env, free_port, non_food_photo, running_app
from playwright.sync_api import expect, sync_playwright

from going_modular.deploy.monitor.log import read_log

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
PREDICTION_TIMEOUT_MS = 120_000  # the first prediction warms the model up on a busy CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo, writing its prediction log and its feedback dataset into `app.monitoring`."""
    port, monitoring = free_port(), tmp_path_factory.mktemp("monitoring")
    env = clean_env(FOODVISION_PREDICTION_LOG=str(monitoring / "predictions.jsonl"),
                    FOODVISION_FEEDBACK_DIR=str(monitoring / "flagged"))
    with running_app(["demos/foodvision_mini/app.py", "--port", str(port)], env=env, port=port) as app:
        app.monitoring = monitoring
        yield app


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y chromium, or `make browser`)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),  # a fresh profile every run
            executable_path=str(CHROMIUM), headless=True, viewport={"width": 1280, "height": 900},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield context
        context.close()


@pytest.fixture
def page(server, browser_context):
    """The demo page, loaded; `page.requested_hosts` collects every host the page contacted."""
    page = browser_context.new_page()
    page.requested_hosts = set()
    page.on("request", lambda request: page.requested_hosts.add(urlparse(request.url).hostname))
    page.goto(server.url, wait_until="networkidle")
    yield page
    page.close()


def wait_for_label(page, expected: str) -> None:
    """The prediction arrived: the top bar of the label and the verdict both name `expected`."""
    top = page.get_by_test_id("label").locator(".text").first
    expect(top).to_have_text(expected, timeout=PREDICTION_TIMEOUT_MS)
    expect(page.get_by_label("Verdict")).to_have_value(re.compile(f"^{expected} "))


def test_nothing_is_shown_before_the_first_prediction(page):
    expect(page.get_by_label("Verdict")).to_have_value("")
    expect(page.get_by_label("Prediction time")).to_have_value("")
    expect(page.get_by_test_id("label").locator(".text")).to_have_count(0)


def test_clicking_an_example_predicts_it_without_submit(page):
    page.locator("button.gallery-item").nth(2).click()  # examples are sorted: pizza, steak, sushi
    wait_for_label(page, "sushi")
    verdict = page.get_by_label("Verdict")
    expect(verdict).to_have_value(re.compile(r"^sushi \((\d+)% confident\)$"))
    # One rounding: the verdict's percent is the one the label's bar shows.
    shown = page.get_by_test_id("label").locator(".confidence").first.inner_text()
    assert verdict.input_value() == f"sushi ({shown} confident)"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "foodvision_mini_example.png", full_page=True)
    assert page.requested_hosts == {"127.0.0.1"}, "the page loaded something from the internet"


def test_uploading_a_phone_photo_predicts_pizza(page, shared_data):
    page.locator("input[type=file]").set_input_files(shared_data / "custom_images" / "pizza-dad.jpeg")
    wait_for_label(page, "pizza")  # predicted on upload: no Submit needed
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "foodvision_mini_upload.png", full_page=True)


def test_on_a_phone_the_verdict_is_on_screen_after_a_prediction(page, tmp_path):
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("button.gallery-item").nth(0).click()
    wait_for_label(page, "pizza")
    expect(page.get_by_label("Verdict")).to_be_in_viewport(ratio=1)
    page.evaluate("window.scrollTo(0, 0)")  # and from the top of the page, without any scrolling
    expect(page.get_by_label("Verdict")).to_be_in_viewport(ratio=1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "foodvision_mini_phone_390x844.png")  # the viewport only: what the phone shows
    # Something that is not food: the answer says so, on screen too.
    cat = tmp_path / "cat.png"
    non_food_photo("chelsea").save(cat)
    page.locator("input[type=file]").set_input_files(cat)
    expect(page.get_by_label("Verdict")).to_have_value(
        re.compile("^Not pizza, steak or sushi — looks like something else"), timeout=PREDICTION_TIMEOUT_MS)
    expect(page.get_by_label("Verdict")).to_be_in_viewport(ratio=1)
    page.screenshot(path=ARTIFACTS / "foodvision_mini_phone_not_food.png")


def test_uploading_a_non_image_shows_a_clear_message(page, tmp_path):
    renamed = tmp_path / "shopping_list.jpg"
    renamed.write_text("pizza, steak, sushi\n")
    page.locator("input[type=file]").set_input_files(renamed)
    toast = page.locator(".toast-wrap")
    expect(toast).to_contain_text("not an image we can read", timeout=PREDICTION_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "foodvision_mini_bad_upload.png")  # the viewport: where the toast floats


def test_wrong_tell_us_saves_the_photo_the_answer_and_the_correction(page, server):
    page.locator("button.gallery-item").nth(1).click()  # steak
    wait_for_label(page, "steak")
    model = page.get_by_label("Model")
    expect(model).to_have_value(re.compile(r"^model [0-9a-f]{12} \(int8\) · prediction [0-9a-f]{16}$"))
    model_id, prediction_id = model.input_value().split()[1], model.input_value().split()[-1]

    page.get_by_text("Wrong? Tell us").click()
    expect(page.get_by_text("stores your photo on this server")).to_be_visible()  # said before anything is sent
    page.get_by_label("What is it really?").click()
    page.get_by_role("option", name="sushi", exact=True).click()
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text("Thanks! Saved")).to_be_visible(timeout=PREDICTION_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "foodvision_mini_feedback.png", full_page=True)

    flagged = server.monitoring / "flagged"
    (report,) = [json.loads(line) for line in (flagged / "feedback.jsonl").read_text().splitlines()]
    assert (report["id"], report["label"], report["correction"]) == (prediction_id, "steak", "sushi")
    assert report["model_id"] == model_id and report["precision"] == "int8"
    example = ROOT / "demos/foodvision_mini/examples/steak.jpg"
    assert (flagged / report["image"]).read_bytes() == example.read_bytes()
    deadline = time.monotonic() + 10  # the log is written off the serving path, within a second
    logged = []
    while prediction_id not in {r["id"] for r in logged} and time.monotonic() < deadline:
        time.sleep(0.2)
        if (server.monitoring / "predictions.jsonl").is_file():
            logged = read_log(server.monitoring / "predictions.jsonl").records
    (record,) = [r for r in logged if r["id"] == prediction_id]  # the report joins its prediction
    assert (record["mode"], record["label"], record["model_id"]) == ("demo", "steak", model_id)
