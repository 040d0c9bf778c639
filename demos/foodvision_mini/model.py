"""FoodVision Mini's model: EfficientNet-Lite0 with a 3-class head, loaded from the checkpoint beside this file.

The checkpoint records its architecture and class names, so the network is rebuilt by timm
without pretrained weights and filled from the file: no network access. The checkpoint was
trained from the repository root with:
    FOODVISION_DATA_MIRROR=../shared/data python -m going_modular.train --model effnet_lite0 --epochs 10 \
        --data pizza_steak_sushi_20_percent --out demos/foodvision_mini/effnet_lite0_foodvision_mini.pth
"""
from pathlib import Path

from going_modular import gradio_app

CHECKPOINT = Path(__file__).resolve().parent / "effnet_lite0_foodvision_mini.pth"


def load_predictor(checkpoint=CHECKPOINT):
    """The trained FoodVision Mini `Predictor` (raises gradio_app.StartupError if it cannot be loaded)."""
    return gradio_app.load_predictor(checkpoint)
