"""FoodVision Big's model: EfficientNet-Lite0 with a 101-class head, loaded from the checkpoint beside this file.

The checkpoint records its architecture and class names; class_names.txt (the 101 Food-101 names)
must list exactly the same names, or the demo refuses to start with a clear message. The network
is rebuilt by timm without pretrained weights: no network access. Trained from the repository root with:
    python -m going_modular.train --model effnet_lite0 --food101-root ../shared/data/food101_mini \
        --class-names demos/foodvision_big/class_names.txt --label-smoothing 0.1 --epochs 10 \
        --out demos/foodvision_big/effnet_lite0_foodvision_big.pth
"""
from pathlib import Path

from going_modular import gradio_app

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "effnet_lite0_foodvision_big.pth"
CLASS_NAMES = HERE / "class_names.txt"


def load_predictor(checkpoint=CHECKPOINT, class_names_file=CLASS_NAMES):
    """The trained FoodVision Big `Predictor` (raises gradio_app.StartupError if it cannot be loaded)."""
    return gradio_app.load_predictor(checkpoint, class_names_file)
