"""Training loops and feature caching on a small procedural dataset (fast) with a real pretrained backbone."""
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets

from going_modular import engine
from going_modular.data_setup import create_dataloaders, image_loader, take_batches
from going_modular.eager import EagerPredictor
from going_modular.model_builder import create_model
from going_modular.utils import get_device, save_model, set_seeds


def _model_and_loaders(synthetic_dir, shuffle=True):
    model, transform = create_model("effnet_lite0", num_classes=3)
    train_dl, test_dl, classes = create_dataloaders(synthetic_dir / "train", synthetic_dir / "test", transform,
                                                    batch_size=16, num_workers=0)
    if not shuffle:
        train_data = datasets.ImageFolder(synthetic_dir / "train", transform, loader=image_loader)
        train_dl = DataLoader(train_data, batch_size=16)
    return model, train_dl, test_dl


def test_training_beats_chance(synthetic_dir):
    set_seeds(0)
    model, train_dl, test_dl = _model_and_loaders(synthetic_dir)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    results = engine.train(model, train_dl, test_dl, opt, epochs=3, cache_features=True)
    assert set(results) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert all(len(v) == 3 for v in results.values())
    assert results["test_acc"][-1] > 0.8  # chance is 1/3
    assert results["train_loss"][-1] < results["train_loss"][0]


def test_cached_features_match_full_training(synthetic_dir):
    """Same data order, no dropout: caching the frozen backbone gives the same numbers as running it."""
    runs = []
    for cache in (False, True):
        model, train_dl, test_dl = _model_and_loaders(synthetic_dir, shuffle=False)
        model.classifier[0].p = 0.0
        opt = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
        runs.append(engine.train(model, take_batches(train_dl, 2), take_batches(test_dl, 1), opt, epochs=2,
                                 cache_features=cache))
    for key in runs[0]:
        assert runs[0][key] == pytest.approx(runs[1][key], abs=1e-4), key


def test_frozen_backbone_batchnorm_stats_do_not_drift(synthetic_dir):
    model, train_dl, _ = _model_and_loaders(synthetic_dir)
    bn = model.bn1
    before = bn.running_mean.clone()
    opt = torch.optim.Adam(model.classifier.parameters(), lr=1e-3)
    engine.train_step(model, take_batches(train_dl, 2), torch.nn.CrossEntropyLoss(), opt)
    assert torch.equal(bn.running_mean, before)
    assert model.classifier.training  # the head itself is in training mode (dropout on)


def test_label_smoothing_applies_whichever_way_the_loss_is_given(synthetic_dir):
    """train(label_smoothing=0.1) and train(loss_fn=CrossEntropyLoss(), label_smoothing=0.1) give the same
    numbers, and both differ from no smoothing: the given loss is no longer silently left unsmoothed."""
    runs = {}
    for key, loss_fn, smoothing in (("default", None, 0.1), ("given", torch.nn.CrossEntropyLoss(), 0.1),
                                    ("none", torch.nn.CrossEntropyLoss(), 0.0)):
        model, train_dl, test_dl = _model_and_loaders(synthetic_dir, shuffle=False)
        opt = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
        model.classifier[0].p = 0.0
        runs[key] = engine.train(model, take_batches(train_dl, 1), take_batches(test_dl, 1), opt, loss_fn,
                                 epochs=1, device="cpu", label_smoothing=smoothing, cache_features=True)
    assert runs["default"] == runs["given"]
    assert runs["default"]["train_loss"] != runs["none"]["train_loss"]
    with pytest.raises(ValueError, match="label_smoothing needs nn.CrossEntropyLoss"):
        engine.smoothed(torch.nn.NLLLoss(), 0.1)


def test_take_batches_limits_the_data_not_the_loop(synthetic_dir):
    """Fast mode: a loader over 1 batch worth of a seeded random draw (every class can be in it)."""
    _, train_dl, _ = _model_and_loaders(synthetic_dir)
    one = take_batches(train_dl, 1)
    assert len(one) == 1 and len(one.dataset) == 16
    assert one.dataset.indices == take_batches(train_dl, 1).dataset.indices  # seeded
    labels = {train_dl.dataset.targets[i] for i in one.dataset.indices}
    assert len(labels) > 1  # not the first 16 files, which are all one class
    assert take_batches(train_dl, None) is train_dl


def test_cache_refuses_unfrozen_backbone(synthetic_dir):
    model, train_dl, test_dl = _model_and_loaders(synthetic_dir)
    model.conv_stem.weight.requires_grad = True
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="frozen backbone"):
        engine.train(model, train_dl, test_dl, opt, epochs=1, cache_features=True)


def test_empty_dataloader_is_an_error():
    model, _ = create_model("effnet_lite0", num_classes=3, weights=None)
    empty = DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 224, 224), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="no batches"):
        engine.test_step(model, empty, torch.nn.CrossEntropyLoss())


def test_training_saving_and_prediction_run_on_the_chosen_device(synthetic_dir, tmp_path):
    """One device, chosen once (get_device(): cuda where there is a GPU, else the CPU), passed through
    training (both paths), saving, loading and prediction. On a GPU machine this runs on the GPU."""
    device = get_device()
    set_seeds(0)
    model, train_dl, test_dl = _model_and_loaders(synthetic_dir)
    opt = torch.optim.Adam(model.classifier.parameters(), lr=1e-2)
    for cache in (True, False):
        results = engine.train(model, take_batches(train_dl, 1), take_batches(test_dl, 1), opt, epochs=1,
                               device=device, cache_features=cache)
        assert 0 <= results["test_acc"][-1] <= 1
    assert {p.device.type for p in model.parameters()} == {device.type}
    classes = sorted(d.name for d in (synthetic_dir / "train").iterdir())
    path = save_model(model, tmp_path, "on_device.pth", classes, arch="effnet_lite0")
    predictor = EagerPredictor(path, device=device)
    assert {p.device.type for p in predictor.model.parameters()} == {device.type}
    image = sorted((synthetic_dir / "test" / classes[0]).iterdir())[0]
    result = predictor.predict(image)
    assert result["label"] in classes and sum(result["probs"].values()) == pytest.approx(1, abs=1e-4)
