"""FoodVision Big: a 101-way Food-101 classifier in a Gradio demo (EfficientNet-Lite0 feature extractor).

Run it (no internet needed; serves http://127.0.0.1:7860):
    python demos/foodvision_big/app.py [--host 127.0.0.1] [--port 7860] [--share]
Host and port also come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as on Hugging Face Spaces.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import going_modular  # noqa: F401  installed, or bundled beside app.py in a packaged Space
except ImportError:  # running from the repository: use its going_modular
    sys.path.insert(0, str(HERE.parents[1]))

from going_modular.deploy.gradio_app import build_demo, classify, serve

if __package__:  # imported as demos.foodvision_big.app (the tests)
    from .model import load_predictor
else:  # python app.py, locally or on Spaces
    from model import load_predictor

TOP_K = 5
# Label smoothing keeps probabilities modest: on the test photos 26 of 46 mistakes score below
# 30%, against 17 of 138 right answers.
THRESHOLD = 0.3

predictor = load_predictor()


def predict(image):
    """An image (file path, PIL image or array) -> ({class: probability} top 5, seconds, verdict)."""
    return classify(predictor, image, top_k=TOP_K, threshold=THRESHOLD)


demo = build_demo(
    predict,
    top_k=TOP_K,
    examples_dir=HERE / "examples",
    title="FoodVision Big 🍔👁",
    description=(
        "A 101-way Food-101 head on a frozen EfficientNet-Lite0 backbone. Honest caveat: it was "
        "trained on a 23-class subset of Food-101 only (60 photos per class), so the other 78 "
        "dishes were never seen and are practically never predicted. On 460 test photos of the 23 "
        "trained dishes it is right 72.4% of the time (top-1). Below 30% confidence it says it "
        "is not sure."
    ),
    article=(
        "Trained dishes: apple pie, baby back ribs, baklava, beef carpaccio, beef tartare, beet "
        "salad, beignets, bibimbap, bread pudding, breakfast burrito, chicken curry, chicken wings, "
        "fried rice, grilled salmon, hamburger, ice cream, macaroni and cheese, paella, pizza, "
        "ramen, steak, sushi, waffles. Training on all of Food-101 (`--food101-download`) uses the "
        "same command and demo."
    ),
)

if __name__ == "__main__":
    serve(demo)
