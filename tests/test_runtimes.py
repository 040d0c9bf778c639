"""ONNX export and the faster runtimes: same answers as eager PyTorch on the real test images."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from going_modular import export
from going_modular.predictions import load_image
from going_modular.predictor import Predictor
from going_modular.utils import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def test_images(pss_dir):
    return sorted((pss_dir / "test").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def eager(mini_checkpoint):
    return Predictor(mini_checkpoint, runtime="eager")


def _probs(predictor, images):
    return torch.cat([predictor.probs(torch.stack([predictor.preprocess(p) for p in images[i:i + 32]]))
                      for i in range(0, len(images), 32)]).numpy()


def test_export_round_trip_with_dynamic_batch(mini_checkpoint, test_images, tmp_path):
    model, transform, _ = load_model(mini_checkpoint)
    path = export.export_onnx(model, tmp_path / "mini.onnx", export.input_size(transform))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # the batch axis is dynamic
        x = torch.stack([transform(load_image(p)) for p in test_images[:n]])
        with torch.inference_mode():
            expected = model(x).numpy()
        got = session.run(None, {export.INPUT_NAME: x.numpy()})[0]
        assert got.shape == (n, 3)
        np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_runtime_agrees_with_eager_on_real_test_set(runtime, mini_checkpoint, cache_dir, test_images, pss_dir, eager):
    calibration = sorted((pss_dir / "train").glob("*/*.jpg"))[::4]
    fast = Predictor(mini_checkpoint, runtime=runtime, cache_dir=cache_dir, calibration_images=calibration)
    assert fast.runtime == runtime
    ref, got = _probs(eager, test_images), _probs(fast, test_images)
    labels = np.array([eager.class_names.index(p.parent.name) for p in test_images])
    agreement = (ref.argmax(1) == got.argmax(1)).mean()
    print(f"{runtime}: agreement {agreement:.4f}, accuracy {(got.argmax(1) == labels).mean():.4f}, "
          f"max prob diff {np.abs(ref - got).max():.4f}")
    assert agreement >= 0.99
    assert (got.argmax(1) == labels).mean() >= 0.95
    assert np.abs(ref - got).max() < (1e-3 if runtime == "onnx" else 0.15)
    one = fast.predict(test_images[0])
    assert one["label"] == eager.predict(test_images[0])["label"] and set(one) == {"label", "prob", "probs", "seconds"}


def test_runtime_from_env_and_fallbacks(mini_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FOODVISION_RUNTIME", "onnx")
    assert Predictor(mini_checkpoint, cache_dir=tmp_path).runtime == "onnx"
    assert list(tmp_path.glob("*.onnx")), "the export is cached on first use"
    with caplog.at_level(logging.WARNING):  # no calibration images and no int8 file: fp32 ONNX
        assert Predictor(mini_checkpoint, runtime="onnx-int8", cache_dir=tmp_path).runtime == "onnx"
    assert "calibration" in caplog.text
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert Predictor(mini_checkpoint, runtime="onnx", cache_dir=tmp_path).runtime == "eager"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        Predictor(mini_checkpoint, runtime="tensorrt")


def test_export_cli(mini_checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "going_modular.export", "--checkpoint", str(mini_checkpoint), "--out", str(tmp_path)]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "needs --calibration-dir" in refused.stderr
    done = subprocess.run(cmd + ["--no-int8"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    fp32, _ = export.onnx_paths(mini_checkpoint, tmp_path)
    assert fp32.is_file() and str(fp32) in done.stdout
