"""FoodVision Mini's model: the int8 bundle beside this file, served by ONNX Runtime (no torch).

The bundle records its architecture, class names, preprocessing, measured accuracy and its
open-set score (fitted on training photos of the 98 other Food-101 dishes: `--other-dishes`; its
threshold set on 150 clean menu photos: `--calibration-photos`), so nothing is rebuilt or
downloaded at start-up. It was made from the repository root with:
    FOODVISION_DATA_MIRROR=../shared/data python -m going_modular.train --arch effnet_lite0 --epochs 10 \
        --data pizza_steak_sushi_20_percent --out checkpoints/effnet_lite0_foodvision_mini.pth
    python -m going_modular.export --checkpoint checkpoints/effnet_lite0_foodvision_mini.pth \
        --out demos/foodvision_mini/foodvision_mini.int8.onnx --other-dishes ../shared/data/food101_101 \
        --calibration-photos ../shared/data/menu_calibration --feature-cache models/features
"""
from pathlib import Path

from going_modular.deploy import gradio_app

BUNDLE = Path(__file__).resolve().parent / "foodvision_mini.int8.onnx"


def load_predictor(bundle=BUNDLE):
    """The FoodVision Mini predictor (raises gradio_app.StartupError if it cannot be loaded)."""
    return gradio_app.startup_predictor(bundle)


def create_effnetb2_model(num_classes: int = 3, seed: int = 42):
    """Lesson 09's builder, for the course's app.py (`from model import create_effnetb2_model`). torch is
    imported only when it is called, so the Space stays torch-free (there, this is an ImportError: README.md)."""
    from going_modular.model_builder import create_effnetb2_model as build  # the training wing: needs torch
    return build(num_classes=num_classes, seed=seed)
