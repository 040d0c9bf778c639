"""Shared fixtures: the real data mirror (../shared/data), the extracted course dataset,
the shipped FoodVision Mini checkpoint, and a tiny procedural dataset for fast unit tests."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FOODVISION_DATA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
MINI_CHECKPOINT = ROOT / "checkpoints" / "effnet_lite0_foodvision_mini.pth"
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str):
    """A resource a test needs is missing: a clear skip for a learner, a hard failure in CI (CI=true),
    where everything must run. Use it for the data mirror, Chromium, a GPU-only check..."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: every test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "pizza_steak_sushi_20_percent.zip").is_file():
        unavailable(f"real data mirror not found at {SHARED_DATA} (set FOODVISION_DATA_MIRROR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pss_dir(shared_data, tmp_path_factory) -> Path:
    """The real pizza_steak_sushi_20_percent dataset, extracted by the project's own download_data."""
    from going_modular.data_setup import COURSE_DATA_URL, download_data

    os.environ.setdefault("FOODVISION_DATA_MIRROR", str(shared_data))
    return download_data(COURSE_DATA_URL, tmp_path_factory.mktemp("data") / "pizza_steak_sushi_20_percent")


@pytest.fixture(scope="session")
def mini_checkpoint() -> Path:
    assert MINI_CHECKPOINT.is_file(), f"shipped checkpoint missing: {MINI_CHECKPOINT}"
    return MINI_CHECKPOINT


def make_synthetic_dataset(root: Path, n_train: int = 24, n_test: int = 9, size: int = 64, seed: int = 0) -> Path:
    """3 visually distinct procedural classes: red discs, green horizontal stripes, blue checkers."""
    rng = random.Random(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in ("discs", "stripes", "checkers"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 60, (size, size, 3))
                img = noise.copy()
                if cls == "discs":
                    cx, cy, r = rng.randrange(16, 48), rng.randrange(16, 48), rng.randrange(8, 16)
                    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] += [190, 0, 0]
                elif cls == "stripes":
                    img[(yy // rng.randrange(4, 9)) % 2 == 0] += [0, 190, 0]
                else:
                    k = rng.randrange(6, 12)
                    img[((xx // k) + (yy // k)) % 2 == 0] += [0, 0, 190]
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{cls}_{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))
