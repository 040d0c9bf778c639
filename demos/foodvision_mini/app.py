"""FoodVision Mini: is it pizza, steak or sushi? A Gradio demo of an EfficientNet-Lite0 feature extractor.

Run it (no internet needed; serves http://127.0.0.1:7860):
    python demos/foodvision_mini/app.py [--host 127.0.0.1] [--port 7860] [--share]
Host and port also come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as on Hugging Face Spaces.
"""
import sys
from pathlib import Path

try:
    import going_modular  # noqa: F401  installed, or bundled beside app.py in a packaged Space
except ImportError:  # running from the repository: use its going_modular
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from going_modular.deploy.gradio_app import build_demo, classify, serve

if __package__:  # imported as demos.foodvision_mini.app (the tests)
    from .model import load_predictor
else:  # python app.py, locally or on Spaces
    from model import load_predictor

HERE = Path(__file__).resolve().parent

TOP_K = 3
# Below this top probability the demo says it is not sure (on the 150 test images: 2 of the 4
# mistakes and 5 right answers). Other dishes and non-food are the open-set score's job.
THRESHOLD = 0.6

predictor = load_predictor()


def predict(img):
    """The course's demo function: an image (file path, PIL image or array) -> (pred_labels_and_probs,
    pred_time): {class: probability} for every class, highest first, and the seconds it took. A
    gr.Label(num_top_classes=3) shows its top 3; this demo's page adds the verdict (and "not one of mine")."""
    result = classify(predictor, img, top_k=None)
    return result["probs"], result["seconds"]


demo = build_demo(
    predictor,
    top_k=TOP_K,
    threshold=THRESHOLD,
    examples_dir=HERE / "examples",
    title="FoodVision Mini 🍕🥩🍣",
    description=(
        "Is it pizza, steak or sushi? An EfficientNet-Lite0 feature extractor (frozen ImageNet "
        "backbone, new 3-class head) trained on 450 Food-101 photos; 97.3% accuracy on the 150 "
        "test photos. It also knows what it doesn't know: a photo of something else gets \"Not "
        "pizza, steak or sushi — looks like something else\" (on test photos: 84% of the 98 other "
        "Food-101 dishes, 100% of 23 non-food photos, 3.3% of pizza, steak and sushi). Below 60% "
        "confidence it says it is not sure."
    ),
    article=(
        "Built in the FoodVision model-deployment module with the `going_modular` package: "
        "`python -m going_modular.train --arch effnet_lite0 --epochs 10 --data pizza_steak_sushi_20_percent` "
        "trains it in about 30 seconds on a CPU. Call it from code with `gradio_client`: "
        "`Client(url).predict(handle_file('food.jpg'), api_name='/predict')`."
    ),
)

if __name__ == "__main__":
    serve(demo)
