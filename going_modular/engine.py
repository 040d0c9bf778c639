"""Training and testing loops, plus feature caching for frozen backbones.

Feature caching: with a frozen backbone and no random augmentation, the backbone's output
for an image never changes, so we compute it once and train only the head on the cached
tensors. On a CPU that turns minutes per epoch into milliseconds.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset, TensorDataset
from tqdm.auto import tqdm

from going_modular.data_setup import dataset_targets
from going_modular.deploy.errors import UsageError
from going_modular.model_builder import head_name
from going_modular.utils import get_device


def _frozen_to_eval(model: nn.Module) -> None:
    """Keep frozen parts in eval mode during training.

    A frozen backbone's BatchNorm would otherwise keep updating its running statistics (and
    dropout inside it would stay on), so its features would drift from the pretrained ones.
    Only modules with no trainable parameters of their own, outside the head, are switched.
    """
    head = getattr(model, head_name(model), model)  # `model` may be the bare head (cached features)
    head_modules = set(head.modules())
    for m in model.modules():
        if m is model or m in head_modules:
            continue
        own = list(m.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            m.eval()


def _run_epoch(model, dataloader, loss_fn, device, optimizer=None) -> tuple[float, float]:
    """One pass over `dataloader`; steps `optimizer` when given. Returns (mean loss, accuracy)."""
    total_loss, correct, seen = 0.0, 0, 0
    for X, y in dataloader:
        X, y = X.to(device), y.to(device)
        logits = model(X)
        loss = loss_fn(logits, y)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("the dataloader yielded no batches")
    return total_loss / seen, correct / seen


def train_step(model: nn.Module, dataloader: DataLoader, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, device: torch.device | str = "cpu") -> tuple[float, float]:
    """One epoch of training. Returns (mean loss, accuracy)."""
    model.train()
    _frozen_to_eval(model)
    return _run_epoch(model, dataloader, loss_fn, device, optimizer)


@torch.inference_mode()
def test_step(model: nn.Module, dataloader: DataLoader, loss_fn: nn.Module,
              device: torch.device | str = "cpu") -> tuple[float, float]:
    """Evaluate on a dataloader. Returns (mean loss, accuracy)."""
    model.eval()
    return _run_epoch(model, dataloader, loss_fn, device)


@torch.inference_mode()
def extract_features(model: nn.Module, dataloader: DataLoader, device: torch.device | str = "cpu",
                     desc: str = "features") -> TensorDataset:
    """Run the (frozen) backbone once over a dataloader; returns a TensorDataset(features, labels)."""
    name = head_name(model)
    head = getattr(model, name)
    setattr(model, name, nn.Identity())  # the model now outputs pooled backbone features
    try:
        model.eval()
        feats, labels = [], []
        for X, y in tqdm(dataloader, desc=desc, leave=False):
            feats.append(model(X.to(device)).cpu())
            labels.append(y)
    finally:
        setattr(model, name, head)
    if not feats:
        raise ValueError("extract_features: the dataloader yielded no batches")
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def _samples(dataset) -> tuple[list[str], list[int], object]:
    """(image paths, labels, transform) of an ImageFolder, a Food101 or a Subset of either."""
    if isinstance(dataset, Subset):
        paths, labels, transform = _samples(dataset.dataset)
        return [paths[i] for i in dataset.indices], [labels[i] for i in dataset.indices], transform
    if hasattr(dataset, "samples"):  # ImageFolder
        paths = [p for p, _ in dataset.samples]
    elif hasattr(dataset, "_image_files"):  # torchvision Food101
        paths = dataset._image_files
    else:
        raise ValueError(f"a feature cache needs an ImageFolder or Food101 dataset, got {type(dataset).__name__}")
    # real paths: the same photos reached through a relative root, a mirror variable or a symlink share a key
    return [os.path.realpath(p) for p in paths], dataset_targets(dataset), dataset.transform


def feature_key(model: nn.Module, dataset) -> str:
    """What determines a frozen backbone's features of a dataset, hashed: the architecture, its first
    weights (pretrained or not), the transform, and every image path and label in order."""
    paths, labels, transform = _samples(dataset)
    first = next(model.parameters()).detach().double()
    described = {"arch": getattr(model, "arch", type(model).__name__), "weights": first.sum().item(),
                 "transform": repr(transform), "paths": paths, "labels": labels}
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:20]


def cached_features(model: nn.Module, dataloader: DataLoader, cache_dir: str | Path,
                    device: torch.device | str = "cpu", desc: str = "features") -> TensorDataset:
    """`extract_features` of the loader's dataset, in dataset order, stored once in `cache_dir`
    under its `feature_key`: a later run (another recipe, the benchmark, the notebook) reads it back."""
    path = Path(cache_dir) / f"features-{feature_key(model, dataloader.dataset)}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return TensorDataset(saved["features"], saved["labels"])
    # Its own generator: iterating a loader draws its workers' seed from the global RNG otherwise, and
    # the dropout that follows would then differ between a run that fills the cache and one that reads it.
    loader = DataLoader(dataloader.dataset, batch_size=dataloader.batch_size, shuffle=False,
                        num_workers=dataloader.num_workers, generator=torch.Generator().manual_seed(0))
    features = extract_features(model, loader, device, desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({"features": features.tensors[0], "labels": features.tensors[1]}, tmp)
    os.replace(tmp, path)  # a concurrent reader never sees half a file
    return features


def _cached_loader(features: TensorDataset, like: DataLoader, seed: int) -> DataLoader:
    """A loader over cached features with the same batch size and shuffling as the original."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(features, batch_size=like.batch_size, shuffle=isinstance(like.sampler, RandomSampler),
                      generator=g)


def smoothed(loss_fn: nn.Module | None, label_smoothing: float) -> nn.Module:
    """The loss to train with: CrossEntropyLoss by default; `label_smoothing` applies to a given one too.

    A given CrossEntropyLoss keeps its weights and reduction and takes the smoothing; any other
    loss cannot be smoothed here, so asking for it is an error rather than silently ignored.
    """
    if loss_fn is None:
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if not label_smoothing:
        return loss_fn
    if not isinstance(loss_fn, nn.CrossEntropyLoss):
        raise ValueError(f"label_smoothing needs nn.CrossEntropyLoss, got {type(loss_fn).__name__}")
    return nn.CrossEntropyLoss(weight=loss_fn.weight, ignore_index=loss_fn.ignore_index,
                               reduction=loss_fn.reduction, label_smoothing=label_smoothing)


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CrossEntropyLoss weights that give every class the same total weight: N / (C * count).

    An unbalanced training set (FoodVision Big: 34 dishes with ~60 photos, 67 with 40) otherwise
    tilts the head toward the larger classes; a class absent from `labels` gets weight 0.
    """
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros(()))


def train(model: nn.Module, train_dataloader: DataLoader, test_dataloader: DataLoader,
          optimizer: torch.optim.Optimizer, loss_fn: nn.Module | None = None, epochs: int = 5,
          device: torch.device | str | None = None, label_smoothing: float = 0.0,
          cache_features: bool = False, seed: int = 42, extra_train_dataloaders=(),
          feature_cache: str | Path | None = None) -> dict:
    """Train and test for `epochs`. Returns {"train_loss", "train_acc", "test_loss", "test_acc"} lists.

    The course's signature and results; the extras are keywords with defaults that change nothing:
    device None picks the GPU when there is one (`utils.get_device`); loss_fn None is
    CrossEntropyLoss; label_smoothing applies whichever way the loss is given (see `smoothed`).
    cache_features=True (frozen backbone, deterministic train transform only): the backbone
    runs once per image and each epoch trains just the head on cached features. The results
    match ordinary training up to batch order; the speed-up is what `benchmarks` measure.
    extra_train_dataloaders (with cache_features): the same training photos under other fixed
    transforms (`data_setup.view_transform`: flip, zoom); their cached features join the training
    set, so each epoch sees every photo once per view: augmentation that stays cacheable.
    feature_cache (a folder, with cache_features): features are extracted in dataset order and kept
    there (`cached_features`), so a second run on the same photos skips the backbone.
    """
    device = get_device(device)
    loss_fn = smoothed(loss_fn, label_smoothing)
    model.to(device)
    results = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    fit, train_dl, test_dl = model, train_dataloader, test_dataloader
    if extra_train_dataloaders and not cache_features:
        raise ValueError("extra_train_dataloaders (fixed views) need cache_features=True")
    if cache_features:
        head = getattr(model, head_name(model))
        trainable_outside_head = ({id(p) for p in model.parameters() if p.requires_grad}
                                  - {id(p) for p in head.parameters()})
        if trainable_outside_head:
            raise UsageError("cache_features needs a frozen backbone (only the head may be trainable)")
        def extract(dataloader, desc):
            if feature_cache is not None:
                return cached_features(model, dataloader, feature_cache, device, desc)
            return extract_features(model, dataloader, device, desc)

        views = [extract(dl, "train features") for dl in (train_dataloader, *extra_train_dataloaders)]
        cached = TensorDataset(torch.cat([v.tensors[0] for v in views]), torch.cat([v.tensors[1] for v in views]))
        train_dl = _cached_loader(cached, train_dataloader, seed=seed)
        test_dl = _cached_loader(extract(test_dataloader, "test features"), test_dataloader, seed=seed)
        fit = head  # the optimizer already holds the head's parameters
    for epoch in tqdm(range(epochs), desc="epochs"):
        train_loss, train_acc = train_step(fit, train_dl, loss_fn, optimizer, device)
        test_loss, test_acc = test_step(fit, test_dl, loss_fn, device)
        print(f"Epoch: {epoch + 1} | train_loss: {train_loss:.4f} | train_acc: {train_acc:.4f} | "
              f"test_loss: {test_loss:.4f} | test_acc: {test_acc:.4f}")
        for k, v in zip(results, (train_loss, train_acc, test_loss, test_acc), strict=True):
            results[k].append(v)
    return results
