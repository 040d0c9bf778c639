"""ONNX export: the exported graph gives the eager model's logits on real images, with a dynamic
batch axis; dynamic int8 keeps its answers; the CLI writes the files Predictor's ONNX runtimes look for."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from going_modular import export
from going_modular.deploy.image import load_image
from going_modular.utils import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_export_round_trip_with_dynamic_batch(mini_checkpoint, pss_dir, tmp_path):
    test_images = sorted((pss_dir / "test").glob("*/*.jpg"))
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
    # Dynamic int8 (the ViT recipe: int8 Linear weights, no calibration) keeps the classifier's top-1.
    quantized = export.quantize_onnx_int8(path, tmp_path / "mini.int8.onnx", dynamic=True)
    got = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(
        None, {export.INPUT_NAME: x.numpy()})[0]
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_export_cli(mini_checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "going_modular.export", "--checkpoint", str(mini_checkpoint), "--out", str(tmp_path)]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "needs --calibration-dir" in refused.stderr
    done = subprocess.run(cmd + ["--no-int8"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    fp32, _ = export.onnx_paths(mini_checkpoint, tmp_path)
    assert fp32.is_file() and str(fp32) in done.stdout
