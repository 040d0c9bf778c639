"""Self-describing checkpoints: round trip, and clear errors for missing/mismatched files."""

import pytest
import torch
from PIL import Image

from going_modular import utils
from going_modular.model_builder import create_model
from going_modular.utils import CheckpointError, load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, _ = create_model("effnet_lite0", num_classes=3, weights=None, seed=3)
    path = save_model(model, tmp_path_factory.mktemp("ckpt"), "m.pth", ["pizza", "steak", "sushi"], extra={"note": "x"})
    return model, path


def test_round_trip_gives_identical_predictions(saved):
    model, path = saved
    loaded, transform, ckpt = load_model(path)
    assert ckpt["arch"] == "effnet_lite0" and ckpt["class_names"] == ["pizza", "steak", "sushi"] and ckpt["note"] == "x"
    x = transform(Image.new("RGB", (300, 300), "orange")).unsqueeze(0)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training


def test_size_and_parameter_counts(saved):
    model, path = saved
    assert 10 < utils.model_size_mb(path) < 20
    counts = utils.count_parameters(model)
    assert counts["total"] > 3_000_000 and counts["trainable"] == 1280 * 3 + 3


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(junk)
    plain = tmp_path / "plain.pth"
    torch.save(create_model("effnet_lite0", 3, weights=None)[0].state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a FoodVision checkpoint"):
        load_model(plain)


def test_mismatched_checkpoint(saved, tmp_path):
    _, path = saved
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch"] = "effnet_lite2"  # weights of one model labelled as another
    bad = tmp_path / "bad.pth"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="does not match architecture 'effnet_lite2'"):
        load_model(bad)
    ckpt = torch.load(path, weights_only=True)
    ckpt["class_names"] = ["a", "b", "c", "d"]  # head has 3 outputs
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="4 classes"):
        load_model(bad)


def test_wrong_class_names_file(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="class names do not match"):
        load_model(path, class_names=["pizza", "sushi", "steak"])


def test_save_model_validates_name(saved, tmp_path):
    model, _ = saved
    with pytest.raises(ValueError, match=".pt"):
        save_model(model, tmp_path, "m.bin", ["a"])


def test_set_seeds_is_reproducible():
    utils.set_seeds(5)
    a = torch.rand(3)
    utils.set_seeds(5)
    assert torch.equal(a, torch.rand(3))
