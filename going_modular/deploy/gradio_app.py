"""What every FoodVision Gradio demo shares: load the checkpoint, classify an upload, build and serve the UI.

A demo folder (demos/foodvision_mini, demos/foodvision_big) holds only its configuration: the
int8 bundle, an optional class-names file, its texts and example images. Mini and Big call these
same functions, so they cannot drift apart, and the predictions come from the shared serving predictor.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr
from PIL import Image

from going_modular.deploy.bundle import BundleError, read_class_names
from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.predictor import OnnxPredictor, default_threads

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Phone photos are 2-10 MB; a bigger upload is refused by Gradio before it reaches the model.
MAX_FILE_SIZE = "50mb"
UNREADABLE_UPLOAD = "This upload is not an image we can read (JPEG, PNG, WebP, GIF, BMP...)."


class StartupError(SystemExit):
    """The demo cannot start: bundle missing or unreadable, or class names that do not match it.

    A SystemExit, so `python app.py` (and a Hugging Face Space's log) shows this one clear line
    and exits with status 1 instead of printing a traceback.
    """


def load_predictor(bundle: str | os.PathLike, class_names_file: str | os.PathLike | None = None) -> OnnxPredictor:
    """The demo's predictor: its int8 bundle, served by ONNX Runtime (no torch, no network).

    With `class_names_file`, its names must equal the bundle's. Threads: $FOODVISION_THREADS.
    """
    try:
        names = read_class_names(class_names_file) if class_names_file else None
        return OnnxPredictor(bundle, class_names=names, num_threads=default_threads())
    except (BundleError, OSError) as e:
        raise StartupError(f"FoodVision demo cannot start: {e}") from e


def _or_list(names: list[str]) -> str:
    """["pizza", "steak", "sushi"] -> "pizza, steak or sushi"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def unsure_message(class_names: list[str]) -> str:
    """What to say when the top probability is too low to trust."""
    if len(class_names) <= 5:
        return f"Not sure this is {_or_list(class_names)}"
    return f"Not sure this is one of the {len(class_names)} foods this model knows"


def classify(predictor: OnnxPredictor, image, top_k: int, threshold: float) -> tuple[dict, float, str]:
    """One upload (file path, PIL image, array or None) -> ({class: prob} for the top_k, seconds, verdict).

    The verdict names the top class, or says the model is not sure when its probability is below
    `threshold`. An unusable input raises `gr.Error` with `load_image`'s explanation: a message
    in the UI and in the API's error, and no traceback in the server log.
    """
    try:
        result = predictor.predict(image, top_k=top_k)
    except InvalidImageError as e:
        raise gr.Error(str(e), print_exception=False) from e
    label, prob = result["label"], result["prob"]
    if prob < threshold:
        verdict = f"{unsure_message(predictor.class_names)}: best guess {label} ({prob:.1%})."
    else:
        verdict = f"{label} ({prob:.1%} confident)"
    return result["probs"], result["seconds"], verdict


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


def build_demo(predict, top_k: int, examples_dir: str | os.PathLike, title: str, description: str,
               article: str) -> gr.Interface:
    """The demo page: an image in; the top_k probabilities, the prediction time and a verdict out.

    `predict` is also served as the named API endpoint "/predict" (for `gradio_client`).
    Example images are every file in `examples_dir`.
    """
    examples = [[str(p)] for p in sorted(Path(examples_dir).iterdir()) if p.is_file()]
    return gr.Interface(
        fn=predict,
        inputs=image_input(label="Food photo", sources=["upload", "clipboard"]),
        outputs=[gr.Label(num_top_classes=top_k, label=f"Top {top_k} predictions"),
                 gr.Number(label="Prediction time (s)"),
                 gr.Textbox(label="Verdict")],
        examples=examples,
        cache_examples=False,  # predicting takes well under a second; nothing to precompute at start-up
        title=title,
        description=description,
        article=article,
        api_name="predict",
        flagging_mode="never",  # nothing is written to disk
        analytics_enabled=False,  # no calls to Gradio's servers
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve a FoodVision Gradio demo (no internet needed).")
    # Defaults follow Gradio's own variables, which Hugging Face Spaces set to 0.0.0.0:7860.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST),
                   help="address to listen on (env GRADIO_SERVER_NAME; default %(default)s)")
    p.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT),
                   help="port to listen on (env GRADIO_SERVER_PORT; default %(default)s)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (needs internet)")
    return p.parse_args(argv)


def serve(demo: gr.Interface, argv=None) -> None:
    """Serve `demo` until interrupted, on the host and port from the command line or environment."""
    args = parse_args(argv)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
