"""What every FoodVision Gradio demo shares: load the checkpoint, classify an upload, build and serve the UI.

A demo folder (demos/foodvision_mini, demos/foodvision_big) holds only its configuration: the
int8 bundle, an optional class-names file, its texts and example images. Mini and Big call these
same functions, so they cannot drift apart, and the predictions come from the shared serving predictor.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from gradio.exceptions import InvalidPathError
from PIL import Image

from going_modular.deploy.errors import UserError
from going_modular.deploy.feedback import FeedbackError, FeedbackStore, choices, feedback_from_env, human
from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.monitor.log import PredictionLog, log_from_env, prediction_record
from going_modular.deploy.monitor.stats import predict_batch_with_stats
from going_modular.deploy.predictor import Predictor, load_predictor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Phone photos are 2-10 MB; a bigger upload is refused by Gradio before it reaches the model.
MAX_FILE_SIZE = "50mb"
UNREADABLE_UPLOAD = "This upload is not an image we can read (JPEG, PNG, WebP, GIF, BMP...)."
FOREIGN_PATH = "Only images uploaded to this demo can be predicted: upload the photo itself."
# Uploads are Gradio temp files: every 10 minutes delete those older than 10 minutes (a phone
# photo is 2-10 MB; a busy demo would otherwise fill the disk), and all of them at shutdown.
DELETE_CACHE = (600, 600)
FEEDBACK_NOTICE = ("Sending feedback **stores your photo on this server**, with the model's answer and your "
                   "choice, so that the model's mistakes can be checked and fixed. Nothing is stored unless you "
                   "press *Send feedback*; don't send a photo you want to keep private.")
FROM_ENV = "from the environment"  # build_demo's default log and feedback folder
# The latest predictions a "Wrong? Tell us" report can name (their photos are Gradio's uploads, kept 10 minutes).
RECENT_PREDICTIONS = 1000
PREDICTION_ID = re.compile(r"(?:^|prediction )([0-9a-f]{16})$")
log = logging.getLogger(__name__)


class StartupError(SystemExit):
    """The demo cannot start: bundle missing or unreadable, or class names that do not match it.

    A SystemExit, so `python app.py` (and a Hugging Face Space's log) shows this one clear line
    and exits with status 1 instead of printing a traceback.
    """


def startup_predictor(bundle: str | os.PathLike, class_names_file: str | os.PathLike | None = None) -> Predictor:
    """The demo's predictor: `load_predictor` on its int8 bundle (ONNX Runtime: no torch, no
    network), with any reason it cannot load as a StartupError. With `class_names_file`, its names
    must equal the bundle's. Threads: $FOODVISION_THREADS.
    """
    try:
        return load_predictor(bundle, class_names=class_names_file)
    except (UserError, OSError) as e:
        raise StartupError(f"FoodVision demo cannot start: {e}") from e


def percent(prob: float) -> str:
    """A probability as the UI shows it everywhere: whole percent, rounded half up like gr.Label
    (JavaScript's Math.round), so the verdict and the bars never disagree ("100%" vs "99.9%")."""
    return f"{math.floor(prob * 100 + 0.5)}%"


def _or_list(names: list[str]) -> str:
    """["pizza", "steak", "sushi"] -> "pizza, steak or sushi"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def menu(class_names: list[str]) -> str:
    """What the model knows, in words: "pizza, steak or sushi", or "one of the 101 foods this model knows"."""
    if len(class_names) <= 5:
        return _or_list([human(n) for n in class_names])
    return f"one of the {len(class_names)} foods this model knows"


def classify(predictor: Predictor, image, top_k: int) -> dict:
    """One upload (file path, PIL image, array or None) -> the predictor's result for the top_k
    ({"label", "prob", "probs", "seconds", "known", "ood_score"}).

    An unusable input raises `gr.Error` with `load_image`'s explanation: a message in the UI and
    in the API's error, and no traceback in the server log.
    """
    try:
        return predictor.predict(image, top_k=top_k)
    except InvalidImageError as e:
        raise gr.Error(str(e), print_exception=False) from e


def classify_with_stats(predictor: Predictor, image, top_k: int) -> tuple[dict, dict]:
    """`classify` that also returns the image's statistics for the prediction log (one decode, one
    forward pass; see monitor.stats)."""
    try:
        return predict_batch_with_stats(predictor, [image], top_k)[0]
    except InvalidImageError as e:
        raise gr.Error(str(e), print_exception=False) from e


def predict_and_record(predictor: Predictor, image, top_k: int, prediction_log: PredictionLog | None = None,
                       ) -> tuple[dict, dict]:
    """One prediction of the demo, with its identity: (result, record).

    record: its prediction-log record (mode "demo", a fresh `id` that a feedback report joins on,
    the model's id and precision), queued on `prediction_log` when there is one (never waits
    for the disk: PredictionLog.write only queues). Without a log no image statistics are taken.
    """
    if prediction_log is None:
        result, stats = classify(predictor, image, top_k), None
    else:
        result, stats = classify_with_stats(predictor, image, top_k)
    record = prediction_record(predictor, result, stats, mode="demo", id=secrets.token_hex(8))
    if prediction_log is not None:
        prediction_log.write(record)
    return result, record


def model_line(predictor: Predictor, prediction_id: str | None = None) -> str:
    """Which model answered: "model 3f2a9c1d5e6f (int8) · prediction 9b1c...": the bundle's id (as in
    the web service's answers and every log line) and this prediction's id (its log record's)."""
    line = f"model {predictor.model_id} ({predictor.precision})"
    return line if prediction_id is None else f"{line} · prediction {prediction_id}"


class RecentPredictions:
    """The demo's latest predictions by id, {"image", **log record}, the oldest forgotten past `size`:
    what a report of one needs. Kept here rather than in a gr.State, which would make every
    browser and gradio_client hold a heartbeat connection open (and delay shutdown past Gradio's
    5 s, so the uploads would not be deleted)."""

    def __init__(self, size: int = RECENT_PREDICTIONS):
        self.size = size
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()  # Gradio runs event functions in a thread pool

    def add(self, last: dict) -> None:
        with self._lock:
            self._items[last["id"]] = last
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def lookup(self, shown: str | None) -> dict | None:
        """The prediction that `shown` (the page's Model line, or a bare prediction id) names;
        None when it names none (nothing predicted yet). FeedbackError for an id not (or no longer) kept."""
        match = PREDICTION_ID.search((shown or "").strip())
        if match is None:
            return None
        with self._lock:
            last = self._items.get(match.group(1))
        if last is None:
            raise FeedbackError(f"prediction {match.group(1)} is not one of this demo's latest {self.size}: "
                                "predict the photo again, then send the feedback")
        return last


def send_feedback(store: FeedbackStore, last: dict | None, correction: str | None, class_names: list[str]) -> str:
    """Save a "Wrong? Tell us" report of the last prediction (`last`: {"image", **its log record})
    and say so; an unusable report (nothing predicted yet, an unknown dish, the photo gone) or a
    folder that cannot be written raises gr.Error with one line."""
    try:
        record = store.save(last, correction, class_names)
    except FeedbackError as e:
        raise gr.Error(str(e), print_exception=False) from e
    except OSError as e:
        log.warning("feedback not saved in %s: %s", store.root, e)
        raise gr.Error(f"Sorry, the feedback could not be saved on this server ({e.strerror or e}).",
                       print_exception=False) from e
    return (f"Thanks! Saved: the model said **{human(record['label'])}**, you say **{human(record['correction'])}** "
            f"(prediction {record['id']}).")


def verdict(result: dict, class_names: list[str], threshold: float) -> str:
    """The one-line answer: the dish, "not sure" below `threshold`, or "not one of mine" when the
    open-set score says the photo is something else (another dish, not food at all)."""
    label, prob = human(result["label"]), result["prob"]
    if result["known"] is False:
        return f"Not {menu(class_names)} — looks like something else (closest: {label}, {percent(prob)})."
    if prob < threshold:
        return f"Not sure this is {menu(class_names)}: best guess {label} ({percent(prob)})."
    return f"{label} ({percent(prob)} confident)"


def present(result: dict, class_names: list[str], threshold: float) -> tuple[dict, str, str]:
    """A result as the page shows it: ({human class name: prob}, "0.012 s", verdict).

    The time is text, not a gr.Number: a Number box shows "0" before the first prediction."""
    probs = {human(name): p for name, p in result["probs"].items()}
    return probs, f"{result['seconds']:.3f} s", verdict(result, class_names, threshold)


def image_input(**kwargs) -> gr.Image:
    """A gr.Image that hands unreadable uploads on to our function instead of failing inside Gradio.

    gr.Image opens every upload with PIL before the event function runs, so a text file renamed
    .jpg or an empty file would end as an anonymous "Error" and a server traceback. Passing the
    raw path on lets `load_image` say what is wrong. type="filepath" with image_mode=None keeps
    Gradio from decoding and re-encoding the image: `load_image` does that once, properly
    (EXIF rotation, CMYK, alpha, 16-bit, draft decoding of huge JPEGs).
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except (OSError, ValueError, Image.DecompressionBombError):
            if payload is None or payload.path is None:  # a data: URL that did not decode
                raise gr.Error(UNREADABLE_UPLOAD, print_exception=False) from None
            return payload.path

    # Replaced on the instance: subclassing gr.Image would make Gradio write a .pyi stub beside this module.
    image.preprocess = preprocess
    return image


def refuse_foreign_paths(demo: gr.Blocks) -> None:
    """A client that names a server file instead of uploading one (`{"path": "/etc/passwd"}`) is
    refused by Gradio before our code runs, but as a bare `{"error": null}` and a long traceback
    in the log. Turn it into a message the client can read and one log line."""
    gradio_preprocess = demo.preprocess_data

    async def preprocess_data(*args, **kwargs):
        try:
            return await gradio_preprocess(*args, **kwargs)
        except InvalidPathError as e:
            log.warning("refused a request naming a server file instead of an upload: %s", str(e).split(" because")[0])
            raise gr.Error(FOREIGN_PATH, print_exception=False) from None

    # Replaced on the instance, like image_input's preprocess: a Blocks subclass would change every demo's type.
    demo.preprocess_data = preprocess_data


def build_demo(predictor: Predictor, top_k: int, threshold: float, examples_dir: str | os.PathLike,
               title: str, description: str, article: str, prediction_log: PredictionLog | None | str = FROM_ENV,
               feedback: FeedbackStore | None | str = FROM_ENV) -> gr.Blocks:
    """The demo page. Laid out for a phone first: the photo, the examples and then the verdict fit in
    a 390x844 screen; the description and the notes come below.

    A prediction runs on upload, on Submit and on a click on an example; its answer is the
    top_k probabilities, the verdict, the prediction time and which model answered, all empty
    until then. The same function is the named API endpoint "/predict" (for `gradio_client`),
    returning ({class: prob}, "0.012 s", verdict, "model 3f2a9c1d5e6f (int8) · prediction 9b1c...").
    The model is warmed up on the first example before serving.

    prediction_log: where each prediction is logged (default: $FOODVISION_PREDICTION_LOG, off when
    unset). feedback: the "Wrong? Tell us" dataset (default: $FOODVISION_FEEDBACK_DIR or ./flagged;
    None: no feedback control), also the named endpoint "/feedback" (the Model line or the
    prediction id, and the correction: a class name, its human name or "not_food").
    """
    examples = [str(p) for p in sorted(Path(examples_dir).iterdir()) if p.is_file()]
    if prediction_log == FROM_ENV:
        prediction_log = log_from_env()
    if feedback == FROM_ENV:
        try:
            feedback = feedback_from_env()
        except FeedbackError as e:
            raise StartupError(f"FoodVision demo cannot start: {e}") from e

    recent = RecentPredictions()

    def show(image):  # not "predict": that name belongs to the API endpoint below
        result, record = predict_and_record(predictor, image, top_k, prediction_log)
        recent.add({"image": image, **record})  # what a feedback report of this answer needs
        return (*present(result, predictor.class_names, threshold), model_line(predictor, record["id"]))

    def report(shown, correction):
        try:
            last = recent.lookup(shown)
        except FeedbackError as e:
            raise gr.Error(str(e), print_exception=False) from e
        return send_feedback(feedback, last, correction, predictor.class_names)

    if examples:
        present(classify(predictor, examples[0], top_k), predictor.class_names, threshold)  # warm-up, not logged
    # The answer boxes are created first (the examples need them) and placed after the photo.
    answer = gr.Textbox(label="Verdict", interactive=False, render=False)
    label = gr.Label(num_top_classes=top_k, label=f"Top {top_k} predictions", show_heading=False, render=False)
    seconds = gr.Textbox(label="Prediction time", interactive=False, render=False)
    model = gr.Textbox(label="Model", interactive=False, render=False)
    outputs = [label, seconds, answer, model]
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(f"## {title}")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                image = image_input(label="Food photo", sources=["upload", "clipboard"], height=240)
                if examples:
                    gr.Examples([[e] for e in examples], inputs=image, outputs=outputs, fn=show, run_on_click=True,
                                cache_examples=False, examples_per_page=len(examples), api_visibility="private")
                submit = gr.Button("Submit", variant="primary")
            with gr.Column(min_width=300):
                for component in (answer, label, seconds, model):
                    component.render()
                if feedback is not None:
                    with gr.Accordion("Wrong? Tell us", open=False):
                        gr.Markdown(FEEDBACK_NOTICE)
                        # Custom values reach send_feedback, which names what is wrong in one line (Gradio's
                        # own check would log a traceback) and accepts human spellings from API clients.
                        dish = gr.Dropdown(choices(predictor.class_names), value=None, label="What is it really?",
                                           allow_custom_value=True)
                        send = gr.Button("Send feedback")
                        thanks = gr.Markdown()
        gr.Markdown(f"{description}\n\n{article}")
        gr.on([image.upload, submit.click], show, inputs=image, outputs=outputs, api_name="predict")
        image.clear(lambda: (None,) * len(outputs), outputs=outputs, api_name=False)
        if feedback is not None:
            send.click(report, inputs=[model, dish], outputs=thanks, api_name="feedback")
            model.change(lambda: (None, ""), outputs=[dish, thanks], api_name=False)  # a new answer, a new report
    refuse_foreign_paths(demo)
    return demo


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve a FoodVision Gradio demo (no internet needed).")
    # Defaults follow Gradio's own variables, which Hugging Face Spaces set to 0.0.0.0:7860.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST),
                   help="address to listen on (env GRADIO_SERVER_NAME; default %(default)s)")
    p.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT),
                   help="port to listen on (env GRADIO_SERVER_PORT; default %(default)s)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (needs internet)")
    return p


def serve(demo: gr.Blocks, argv=None) -> None:
    """Serve `demo` until interrupted, on the host and port from the command line or environment."""
    args = get_args_parser().parse_args(argv)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
