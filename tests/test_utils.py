"""Checkpoints: the course's plain state_dict + a JSON sidecar, the older single-file format, clear errors."""
import json

import pytest
import torch
from PIL import Image

from going_modular import utils
from going_modular.model_builder import create_model
from going_modular.utils import CheckpointError, load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, _ = create_model("effnet_lite0", num_classes=3, weights=None, seed=3)
    path = save_model(model, tmp_path_factory.mktemp("ckpt"), "m.pth", ["pizza", "steak", "sushi"],
                      info={"note": "x"})
    return model, path


def test_round_trip_gives_identical_predictions(saved):
    model, path = saved
    loaded, transform, ckpt = load_model(path)
    assert ckpt["arch"] == "effnet_lite0" and ckpt["class_names"] == ["pizza", "steak", "sushi"]
    assert ckpt["info"] == {"note": "x"}
    x = transform(Image.new("RGB", (300, 300), "orange")).unsqueeze(0)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training


def test_the_file_is_a_plain_state_dict_with_a_json_sidecar(saved):
    model, path = saved
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())  # the course's load_state_dict(torch.load(path)) idiom
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == {"format": utils.SIDECAR_FORMAT, "arch": "effnet_lite0",
                    "class_names": ["pizza", "steak", "sushi"], "info": {"note": "x"}}


def test_older_single_file_checkpoints_keep_loading(saved, tmp_path):
    model, path = saved
    old = tmp_path / "old.pth"  # the format of the shipped checkpoints/*.pth
    torch.save({"format": utils.CHECKPOINT_FORMAT, "arch": "effnet_lite0", "class_names": ["a", "b", "c"],
                "state_dict": model.state_dict(), "info": {"args": {"data": "x"}}}, old)
    loaded, _, ckpt = load_model(old)
    assert ckpt["class_names"] == ["a", "b", "c"] and ckpt["info"]["args"]["data"] == "x"
    assert torch.equal(loaded.classifier[1].weight, model.classifier[1].weight)


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
    with pytest.raises(CheckpointError, match="no FoodVision metadata"):
        load_model(plain)


def test_saved_without_class_names_or_arch(tmp_path):
    """The course's three-argument call on a model built elsewhere still saves; loading says what is missing."""
    model, _ = create_model("effnet_lite0", 3, weights=None)
    path = save_model(model, tmp_path, "course.pth")
    with pytest.raises(CheckpointError, match="without class names: pass class_names="):
        load_model(path)
    assert load_model(path, class_names=["a", "b", "c"])[2]["class_names"] == ["a", "b", "c"]
    del model.arch
    path = save_model(model, tmp_path, "bare.pth", ["a", "b", "c"])
    with pytest.raises(CheckpointError, match="unknown architecture None"):
        load_model(path)


def test_mismatched_checkpoint(saved, tmp_path):
    _, path = saved
    state = torch.load(path, weights_only=True)
    meta = json.loads(path.with_suffix(".json").read_text())
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    bad.with_suffix(".json").write_text(json.dumps({**meta, "arch": "effnet_lite2"}))  # weights of another model
    with pytest.raises(CheckpointError, match="does not match architecture 'effnet_lite2'"):
        load_model(bad)
    bad.with_suffix(".json").write_text(json.dumps({**meta, "class_names": ["a", "b", "c", "d"]}))  # 3 outputs
    with pytest.raises(CheckpointError, match="4 classes"):
        load_model(bad)


def test_wrong_class_names_file(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="class names do not match"):
        load_model(path, class_names=["pizza", "sushi", "steak"])


def test_a_34_class_checkpoint_loaded_as_101_is_one_clear_error(tmp_path, shared_data):
    names34 = sorted(json.loads((shared_data / "food101_34/food-101/meta/train.json").read_text()))
    model, _ = create_model("effnet_lite0", num_classes=34, weights=None)
    path = save_model(model, tmp_path, "big34.pth", names34)
    all101 = (shared_data / "food101_classes.txt").read_text().split()
    with pytest.raises(CheckpointError, match=r"class names do not match checkpoint .*big34.pth: got 101 names "
                                              r".*checkpoint has 34") as e:
        load_model(path, class_names=all101)
    assert "\n" not in str(e.value)
    path.with_suffix(".json").write_text(json.dumps({**json.loads(path.with_suffix(".json").read_text()),
                                                     "class_names": all101}))  # 101 names, 34 outputs
    with pytest.raises(CheckpointError, match="does not match architecture 'effnet_lite0' with 101 classes"):
        load_model(path)


def test_save_model_validates_name(saved, tmp_path):
    model, _ = saved
    with pytest.raises(ValueError, match=".pt"):
        save_model(model, tmp_path, "m.bin", ["a"])


def test_set_seeds_is_reproducible():
    utils.set_seeds(5)
    a = torch.rand(3)
    utils.set_seeds(5)
    assert torch.equal(a, torch.rand(3))


def test_get_device():
    assert utils.get_device("cpu") == torch.device("cpu")
    assert utils.get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
