"""FoodVision Big: all 101 Food-101 dishes in a Gradio demo (EfficientNet-Lite0 feature extractor).

Run it (no internet needed; serves http://127.0.0.1:7860):
    python demos/foodvision_big/app.py [--host 127.0.0.1] [--port 7860] [--share]
Host and port also come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as on Hugging Face Spaces.
"""
import sys
from pathlib import Path

try:
    import going_modular  # noqa: F401  installed, or bundled beside app.py in a packaged Space
except ImportError:  # running from the repository: use its going_modular
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from going_modular.deploy.gradio_app import build_demo, classify, serve

if __package__:  # imported as demos.foodvision_big.app (the tests)
    from .model import load_predictor
else:  # python app.py, locally or on Spaces
    from model import load_predictor

HERE = Path(__file__).resolve().parent

TOP_K = 5
# "Not sure" below 30%: on the 1,390 test photos (eager) 216 of the 506 mistakes score below it,
# against 78 of the 884 right answers.
THRESHOLD = 0.3

predictor = load_predictor()


def predict(img):
    """The course's demo function: an image (file path, PIL image or array) -> (pred_labels_and_probs,
    pred_time): {class: probability} for every class, highest first, and the seconds it took. A
    gr.Label(num_top_classes=5) shows its top 5; this demo's page adds the verdict (and "not one of mine")."""
    result = classify(predictor, img, top_k=None)
    return result["probs"], result["seconds"]


demo = build_demo(
    predictor,
    top_k=TOP_K,
    threshold=THRESHOLD,
    examples_dir=HERE / "examples",
    title="FoodVision Big 🍔👁",
    description=(
        "Which of Food-101's 101 dishes is it? A 101-class head on a frozen EfficientNet-Lite0 backbone, "
        "trained on 4,806 real Food-101 photos (40 to 75 a dish: a quarter of the course's 20% split), "
        "with a class-balanced loss. On the 1,390 test photos of the 101 dishes the "
        "right dish is its first answer 62.6% of the time (top-1) and among its five 87.6% (top-5). "
        "A photo far from every training photo (not food) gets \"looks like something else\"; below 30% "
        "confidence it says it is not sure."
    ),
    article=(
        "It knows all 101 Food-101 dishes: " + ", ".join(name.replace("_", " ") for name in predictor.class_names)
        + ". Food that is none of them but resembles one is named as it. Training on all of Food-101 "
        "(`--food101-download`) uses the same commands and demo."
    ),
)

if __name__ == "__main__":
    serve(demo)
