"""FoodVision Big's model: the int8 bundle beside this file, served by ONNX Runtime (no torch).

The bundle records its architecture, its 101 class names (Food-101's, in the dataset's order) and
its open-set score; class_names.txt must list exactly the same names, or the demo refuses to start
with a clear message. It was made from the repository root with:
    python -m going_modular.train --arch effnet_lite0 --food101-root ../shared/data/food101_101 \
        --class-names demos/foodvision_big/class_names.txt --balance --epochs 10 \
        --feature-cache models/features --out checkpoints/effnet_lite0_foodvision_big.pth
    python -m going_modular.export --checkpoint checkpoints/effnet_lite0_foodvision_big.pth \
        --out demos/foodvision_big/foodvision_big.int8.onnx --feature-cache models/features
"""
from pathlib import Path

from going_modular.deploy import gradio_app

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "foodvision_big.int8.onnx"
CLASS_NAMES = HERE / "class_names.txt"


def load_predictor(bundle=BUNDLE, class_names_file=CLASS_NAMES):
    """The FoodVision Big predictor (raises gradio_app.StartupError if it cannot be loaded)."""
    return gradio_app.startup_predictor(bundle, class_names_file)


def create_effnetb2_model(num_classes: int = 3, seed: int = 42):
    """Lesson 09's builder, for the course's app.py (`from model import create_effnetb2_model`). torch is
    imported only when it is called, so the Space stays torch-free (there, this is an ImportError: README.md)."""
    from going_modular.model_builder import create_effnetb2_model as build  # the training wing: needs torch
    return build(num_classes=num_classes, seed=seed)
