"""The deployable bundle: what `going_modular.export` writes is what every mode serves, torch-free,
with the training transform's answers; a broken or mismatched bundle is one clear error."""
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from going_modular import export
from going_modular.deploy.bundle import BundleError
from going_modular.deploy.image import load_image
from going_modular.deploy.predictor import DEFAULT_BUNDLE, OnnxPredictor, Predictor, load_predictor
from going_modular.eager import EagerPredictor
from going_modular.model_builder import create_model
from going_modular.utils import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
BIG_BUNDLE = ROOT / "demos" / "foodvision_big" / "foodvision_big.int8.onnx"


@pytest.fixture(scope="module")
def test_images(pss_dir):
    return sorted((pss_dir / "test").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def eager(mini_checkpoint):
    return EagerPredictor(mini_checkpoint)


@pytest.fixture(scope="module")
def eager_probs(eager, test_images):
    """Eager PyTorch on the training transform: the reference answers."""
    return _probs(eager, test_images)


@pytest.fixture(scope="module")
def fp32_bundle(mini_checkpoint, pss_dir, tmp_path_factory):
    """An fp32 bundle written by the export CLI (the data: the real course dataset)."""
    out = tmp_path_factory.mktemp("bundle") / "mini.fp32.onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "going_modular.export", "--checkpoint", str(mini_checkpoint),
                           "--precision", "fp32", "--data", str(pss_dir), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout and "test accuracy" in proc.stdout
    return out


def _probs(predictor, images, batch=32):
    return np.concatenate([predictor.probs([predictor.preprocess(p) for p in images[i:i + batch]])
                           for i in range(0, len(images), batch)])


def test_serving_preprocessing_matches_the_training_transform(eager, eager_probs, test_images):
    """numpy/Pillow preprocessing (draft decode, resize+crop on uint8, normalisation in the graph)
    vs the model's torchvision transform: the same top-1 on every test image."""
    served = OnnxPredictor(DEFAULT_BUNDLE)
    ours = _normalised(served, [served.preprocess(p) for p in test_images])
    std = max(served.meta["input"]["std"])
    theirs = [eager.transform(load_image(p)) for p in test_images]
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True)) * 255 * std
    print(f"largest input difference: {diff:.1f} grey levels (JPEG draft decoding of 512-pixel photos)")
    got = np.concatenate([eager.probs(ours[i:i + 32]) for i in range(0, len(ours), 32)])
    assert np.array_equal(eager_probs.argmax(1), got.argmax(1))
    assert diff < 64  # a draft-decoded photo differs in fine detail, never wholesale


def test_shipped_int8_bundle_agrees_with_eager(eager, eager_probs, test_images, int8_slack):
    served = load_predictor()  # the default every mode serves
    assert isinstance(served, OnnxPredictor) and served.runtime == "onnx-int8"
    labels = np.array([eager.class_names.index(p.parent.name) for p in test_images])
    ref, got = eager_probs, _probs(served, test_images)
    agreement, accuracy = (ref.argmax(1) == got.argmax(1)).mean(), (got.argmax(1) == labels).mean()
    print(f"int8 bundle: agreement {agreement:.4f}, accuracy {accuracy:.4f}, "
          f"max prob diff {np.abs(ref - got).max():.3f}")
    n, recorded = len(test_images), served.meta["metrics"]
    assert agreement >= 0.99 - int8_slack / n and accuracy >= 0.96
    assert recorded["test_images"] == n
    assert abs(recorded["test_acc"] - accuracy) <= (int8_slack or 1) / n  # recorded = measured
    assert abs(recorded["top1_agreement_with_eager"] - agreement) <= (int8_slack or 1) / n


def test_bundle_describes_itself(mini_checkpoint):
    meta = OnnxPredictor(DEFAULT_BUNDLE).meta
    _, transform, ckpt = load_model(mini_checkpoint)
    assert meta["arch"] == ckpt["arch"] == "effnet_lite0"
    assert meta["class_names"] == ckpt["class_names"] == ["pizza", "steak", "sushi"]
    assert meta["input"] == export.input_spec(transform)
    assert meta["input"]["interpolation"] == "bicubic" and meta["input"]["size"] == 224
    assert meta["source"]["sha256"] == hashlib.sha256(mini_checkpoint.read_bytes()).hexdigest()
    assert meta["precision"] == "int8" and meta["calibration"]["images"] == 100
    # Mini < 6 MB; Big (101 classes, 505 photos in its distance bank) under the 15 MB
    assert DEFAULT_BUNDLE.stat().st_size < 6 * 2**20 and BIG_BUNDLE.stat().st_size < 15 * 2**20


def _normalised(predictor, pixels):
    """What the bundle's graph does to its uint8 input before the network, done in torch."""
    mean, std = (torch.tensor(predictor.meta["input"][k]).view(3, 1, 1) for k in ("mean", "std"))
    return [(torch.from_numpy(np.array(p)).permute(2, 0, 1) / 255.0 - mean) / std for p in pixels]


def test_fp32_bundle_from_the_cli(fp32_bundle, eager, test_images):
    """The exported graph (uint8 pixels in, normalisation inside) gives eager's probabilities."""
    fp32 = OnnxPredictor(fp32_bundle)
    assert fp32.runtime == "onnx-fp32"
    pixels = [fp32.preprocess(p) for p in test_images[::10]]
    np.testing.assert_allclose(fp32.probs(pixels), eager.probs(_normalised(fp32, pixels)), atol=1e-3)
    with pytest.raises(BundleError, match=r"fp32 bundle but int8 was asked for.*--precision int8"):
        OnnxPredictor(fp32_bundle, precision="int8")


def test_dynamic_int8_keeps_the_answers(fp32_bundle, test_images, tmp_path):
    """The ViT recipe (int8 Linear weights, no calibration) applied to the fp32 graph keeps top-1."""
    quantized = export.quantize_int8(fp32_bundle, tmp_path / "dyn.onnx", dynamic=True)
    fp32 = OnnxPredictor(fp32_bundle)
    pixels = np.stack([fp32.preprocess(p) for p in test_images[::5]])
    import onnxruntime as ort

    got = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})[0]
    assert (got.argmax(1) == fp32.probs(list(pixels)).argmax(1)).mean() >= 0.95


def test_bad_bundles_are_one_clear_error(fp32_bundle, tmp_path):
    with pytest.raises(BundleError,
                       match=r"model bundle not found: .*missing.onnx; create it with `python -m going_modular.export"):
        OnnxPredictor(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(BundleError, match=r"corrupt.onnx is not a readable ONNX model"):
        OnnxPredictor(corrupt)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(fp32_bundle.read_bytes()[: fp32_bundle.stat().st_size // 2])
    with pytest.raises(BundleError, match="truncated.onnx is not a readable ONNX model"):
        OnnxPredictor(truncated)
    import onnx

    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(fp32_bundle))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    with pytest.raises(BundleError, match="not a FoodVision bundle"):
        OnnxPredictor(bare)
    mismatched = tmp_path / "four_classes.onnx"
    meta = OnnxPredictor(fp32_bundle).meta
    onnx.save(onnx.load(str(fp32_bundle)), str(mismatched))
    export.write_metadata(mismatched, {**meta, "class_names": ["pizza", "steak", "sushi", "taco"]})
    with pytest.raises(BundleError, match="has 3 outputs but its metadata names 4 classes"):
        OnnxPredictor(mismatched)
    with pytest.raises(BundleError, match="class names do not match bundle"):
        OnnxPredictor(fp32_bundle, class_names=["pizza", "sushi", "steak"])


def test_checkpoint_is_served_by_the_eager_reference_and_says_so(mini_checkpoint, caplog):
    with caplog.at_level(logging.WARNING):
        predictor = load_predictor(mini_checkpoint)
    assert isinstance(predictor, EagerPredictor) and predictor.runtime == "eager"
    assert "eager PyTorch" in caplog.text
    result = predictor.predict(ROOT / "demos" / "foodvision_mini" / "examples" / "pizza.jpg")
    assert result["label"] == "pizza"
    assert list(result["probs"]) == sorted(result["probs"], key=result["probs"].get, reverse=True)  # best first


def test_both_predictors_describe_themselves_through_the_protocol(eager, mini_checkpoint, tmp_path):
    """model_id: the first 12 hex digits of the sha256 of the file served (bundle or checkpoint)."""
    bundle = load_predictor(DEFAULT_BUNDLE)
    for predictor, path, precision, runtime in ((bundle, DEFAULT_BUNDLE, "int8", "onnx-int8"),
                                                (eager, mini_checkpoint, "fp32", "eager")):
        assert isinstance(predictor, Predictor)
        assert predictor.model_id == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        assert (predictor.path, predictor.precision, predictor.runtime) == (path, precision, runtime)
        assert predictor.arch == "effnet_lite0" and predictor.class_names == ["pizza", "steak", "sushi"]
    copy = tmp_path / "same.onnx"
    copy.write_bytes(DEFAULT_BUNDLE.read_bytes())
    assert load_predictor(copy).model_id == bundle.model_id  # the bytes, not the name
    assert load_predictor(BIG_BUNDLE).model_id != bundle.model_id


def test_serving_wing_never_imports_torch():
    """The deployed app, the web service, batch scoring and streaming load without torch."""
    code = ("import sys, json\n"
            "import going_modular, going_modular.deploy.serve, going_modular.deploy.batch_predict\n"
            "import going_modular.deploy.stream, going_modular.deploy.monitor.drift\n"
            "import demos.foodvision_mini.app as app\n"
            "probs, seconds = app.predict('demos/foodvision_mini/examples/pizza.jpg')[:2]\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules)\n"
            "print(json.dumps({'heavy': heavy, 'top': max(probs, key=probs.get)}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"heavy": [], "top": "pizza"}


def test_export_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "going_modular.export", "--checkpoint", str(tmp_path / "nope.pth")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "nope.pth" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_records_the_monitor_reference(fp32_bundle, test_images):
    """The bundle carries its test split's reference, computed as the monitor's reference CLI does."""
    from going_modular.deploy.monitor.reference import compute_reference

    bundle = OnnxPredictor(fp32_bundle)
    embedded = bundle.meta["reference"]
    assert embedded == compute_reference(bundle, test_images, description=f"test split ({len(test_images)} images)")
    assert embedded["images"] == 150 and sum(embedded["labels"].values()) == 150
    assert len(embedded["samples"]["brightness"]) == 150 and embedded["unknown"] is not None


def test_exporting_a_34_class_checkpoint_on_101_class_data_is_refused(tmp_path, shared_data):
    """Its accuracy would silently count 67 dishes it cannot name as wrong: refused before any work."""
    names34 = sorted(json.loads((shared_data / "food101_34/food-101/meta/train.json").read_text()))
    model, _ = create_model("effnet_lite0", num_classes=34, weights=None)
    checkpoint = save_model(model, tmp_path, "big34.pth", names34)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "going_modular.export", "--checkpoint", str(checkpoint),
                           "--food101-root", str(shared_data / "food101_101"), "--out", str(tmp_path / "b.onnx")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: {checkpoint} knows 34 classes but its test data have 101: 67 it was "
                                  "not trained on (bruschetta, caesar_salad, caprese_salad...)")
    assert not (tmp_path / "b.onnx").exists()
