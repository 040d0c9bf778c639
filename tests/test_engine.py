"""Training loops and feature caching on a small procedural dataset (fast) with a real pretrained backbone."""
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets

from going_modular import engine
from going_modular.data_setup import create_dataloaders, image_loader
from going_modular.model_builder import create_model
from going_modular.utils import set_seeds


def _model_and_loaders(synthetic_dir, shuffle=True):
    model, transform = create_model("effnet_lite0", num_classes=3)
    train_dl, test_dl, classes = create_dataloaders(synthetic_dir / "train", synthetic_dir / "test", transform,
                                                    batch_size=16, num_workers=0)
    if not shuffle:
        train_dl = DataLoader(datasets.ImageFolder(synthetic_dir / "train", transform, loader=image_loader), batch_size=16)
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
        runs.append(engine.train(model, train_dl, test_dl, opt, epochs=2, cache_features=cache))
    for key in runs[0]:
        assert runs[0][key] == pytest.approx(runs[1][key], abs=1e-4), key


def test_frozen_backbone_batchnorm_stats_do_not_drift(synthetic_dir):
    model, train_dl, _ = _model_and_loaders(synthetic_dir)
    bn = model.bn1
    before = bn.running_mean.clone()
    opt = torch.optim.Adam(model.classifier.parameters(), lr=1e-3)
    engine.train_step(model, train_dl, torch.nn.CrossEntropyLoss(), opt, max_batches=2)
    assert torch.equal(bn.running_mean, before)
    assert model.classifier.training  # the head itself is in training mode (dropout on)


def test_label_smoothing_and_max_batches(synthetic_dir):
    model, train_dl, test_dl = _model_and_loaders(synthetic_dir)
    opt = torch.optim.Adam(model.classifier.parameters(), lr=1e-3)
    results = engine.train(model, train_dl, test_dl, opt, epochs=1, label_smoothing=0.1, max_batches=1)
    assert len(results["train_loss"]) == 1
    # one batch of 16 seen: accuracy is a multiple of 1/16
    assert (results["train_acc"][0] * 16) == pytest.approx(round(results["train_acc"][0] * 16))


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
