"""Settings the notebooks share: where things live and the fast (CI) mode.

`FOODVISION_FAST=1` runs every notebook's real code path on a few batches for one epoch, so CI
can execute all of them in minutes; without it you get the full learner run. Paths are relative
to the repository root, where each notebook's first cell moves the kernel.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

from going_modular.data_setup import COURSE_DATA_URL, download_data, take_batches
from going_modular.model_builder import WeightsUnavailableError, create_model
from going_modular.utils import get_device

DATA_DIR = Path("data")
FAST = os.environ.get("FOODVISION_FAST", "0") == "1"
# Fast mode (CI, `make test`) keeps its models and stats apart, so a test run never replaces the
# full-run results that notebook 06 compares.
MODELS_DIR = Path("models") / "fast" if FAST else Path("models")
EPOCHS = 1 if FAST else 10
BATCH_SIZE = 8 if FAST else 32
FAST_BATCHES = 2  # batches of data per split in fast mode, and for an untrained backbone
MAX_BATCHES = FAST_BATCHES if FAST else None
SEED = 42
# One device for training, evaluation and prediction: the GPU when there is one (Colab), else the CPU;
# $FOODVISION_DEVICE overrides it. Speed is always measured on the CPU, the device we deploy to.
DEVICE = get_device(os.environ.get("FOODVISION_DEVICE") or None)


def fast(dataloader, untrained: bool = False):
    """The same loader over FAST_BATCHES batches of its data in fast mode, or for an untrained backbone
    (offline: its numbers time the code and teach nothing); otherwise the loader itself."""
    return take_batches(dataloader, FAST_BATCHES if FAST or untrained else None, SEED)


def get_course_data() -> Path:
    """pizza_steak_sushi_20_percent under data/ (course URL, or $FOODVISION_DATA_MIRROR offline)."""
    return download_data(COURSE_DATA_URL, "pizza_steak_sushi_20_percent", data_dir=DATA_DIR)


def pretrained_or_untrained(build: str | Callable, num_classes: int, seed: int = SEED):
    """(model, transforms, pretrained): ImageNet weights, or, when they cannot be downloaded, random ones.

    `build` is a registered name (`create_model(name, ...)`) or a builder taking the course's keywords
    and `weights`, such as `create_effnetb2_model`. Numbers from a random backbone are not results.
    Offline the notebook says so in one line and goes on with the untrained model for one epoch of a
    few batches (`fast(loader, untrained=True)`): its speed and size are real, and notebook 06 puts
    the course's published accuracy beside them.
    """
    if not callable(build):
        build = functools.partial(create_model, build)
    try:
        model, transforms = build(num_classes=num_classes, seed=seed, weights="DEFAULT")
        return model, transforms, True
    except WeightsUnavailableError as e:
        print(f"[OFFLINE] {e} Continuing UNTRAINED, for speed and size only: no number below is a result; "
              "notebook 06 shows the course's published accuracy instead.")
        model, transforms = build(num_classes=num_classes, seed=seed, weights=None)
        return model, transforms, False


def save_stats(name: str, stats: dict) -> Path:
    """models/<name>_stats.json: what the comparison notebook tabulates."""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    path = MODELS_DIR / f"{name}_stats.json"
    path.write_text(json.dumps(stats, indent=2))
    return path


def load_stats() -> dict:
    """{model name: stats} for every model a notebook has trained and saved."""
    return {p.name.removesuffix("_stats.json"): json.loads(p.read_text())
            for p in sorted(MODELS_DIR.glob("*_stats.json"))}
