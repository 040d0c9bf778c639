"""The Predictor runtimes (eager, onnx, onnx-int8) and its fast preprocessing give eager PyTorch's
answers on the real test images."""
import logging
import sys

import numpy as np
import pytest
import torch

from going_modular.deploy.image import load_image
from going_modular.predictor import Predictor


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


def test_fast_preprocessing_matches_pil_transform(eager, test_images):
    """Predictor.preprocess (uint8 tensor resize) vs the model's own PIL transform: same top-1."""
    pil = torch.stack([eager.transform(load_image(p)) for p in test_images])
    fast = torch.stack([eager.preprocess(p) for p in test_images])
    assert (pil - fast).abs().max() * 127.5 <= 3  # a few grey levels at most ([-1, 1] inputs)
    ref, got = eager.probs(pil), eager.probs(fast)
    assert torch.equal(ref.argmax(1), got.argmax(1))
    assert (ref - got).abs().max() < 0.02
