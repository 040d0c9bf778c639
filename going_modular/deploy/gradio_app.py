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
from pathlib import Path

import gradio as gr
from gradio.exceptions import InvalidPathError
from PIL import Image

from going_modular.deploy.errors import UserError
from going_modular.deploy.image import InvalidImageError
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


def human(name: str) -> str:
    """A class name as people write it: "ice_cream" -> "ice cream"."""
    return name.replace("_", " ")


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
               title: str, description: str, article: str) -> gr.Blocks:
    """The demo page. Laid out for a phone first: the photo, the examples and then the verdict fit in
    a 390x844 screen; the description and the notes come below.

    A prediction runs on upload, on Submit and on a click on an example; its answer is the
    top_k probabilities, the verdict and the prediction time, all empty until then. The same
    function is the named API endpoint "/predict" (for `gradio_client`), returning
    ({class: prob}, "0.012 s", verdict). The model is warmed up on the first example before serving.
    """
    examples = [str(p) for p in sorted(Path(examples_dir).iterdir()) if p.is_file()]

    def show(image):  # not "predict": that name belongs to the API endpoint below
        return present(classify(predictor, image, top_k), predictor.class_names, threshold)

    if examples:
        show(examples[0])  # warm-up: the first user's prediction is not the slow one
    # The answer boxes are created first (the examples need them) and placed after the photo.
    answer = gr.Textbox(label="Verdict", interactive=False, render=False)
    label = gr.Label(num_top_classes=top_k, label=f"Top {top_k} predictions", show_heading=False, render=False)
    seconds = gr.Textbox(label="Prediction time", interactive=False, render=False)
    outputs = [label, seconds, answer]
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
                for component in (answer, label, seconds):
                    component.render()
        gr.Markdown(f"{description}\n\n{article}")
        gr.on([image.upload, submit.click], show, inputs=image, outputs=outputs, api_name="predict")
        image.clear(lambda: (None, None, None), outputs=outputs, api_name=False)
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
