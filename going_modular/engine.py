"""Training and testing loops, plus feature caching for frozen backbones.

Feature caching: with a frozen backbone and no random augmentation, the backbone's output
for an image never changes, so we compute it once and train only the head on the cached
tensors. On a CPU that turns minutes per epoch into milliseconds.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

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


def train(model: nn.Module, train_dataloader: DataLoader, test_dataloader: DataLoader,
          optimizer: torch.optim.Optimizer, loss_fn: nn.Module | None = None, epochs: int = 5,
          device: torch.device | str | None = None, label_smoothing: float = 0.0,
          cache_features: bool = False, seed: int = 42) -> dict:
    """Train and test for `epochs`. Returns {"train_loss", "train_acc", "test_loss", "test_acc"} lists.

    The course's signature and results; the extras are keywords with defaults that change nothing:
    device None picks the GPU when there is one (`utils.get_device`); loss_fn None is
    CrossEntropyLoss; label_smoothing applies whichever way the loss is given (see `smoothed`).
    cache_features=True (frozen backbone, deterministic train transform only): the backbone
    runs once per image and each epoch trains just the head on cached features. The results
    match ordinary training up to batch order; the speed-up is what `benchmarks` measure.
    """
    device = get_device(device)
    loss_fn = smoothed(loss_fn, label_smoothing)
    model.to(device)
    results = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    fit, train_dl, test_dl = model, train_dataloader, test_dataloader
    if cache_features:
        head = getattr(model, head_name(model))
        trainable_outside_head = ({id(p) for p in model.parameters() if p.requires_grad}
                                  - {id(p) for p in head.parameters()})
        if trainable_outside_head:
            raise UsageError("cache_features needs a frozen backbone (only the head may be trainable)")
        train_dl = _cached_loader(extract_features(model, train_dataloader, device, "train features"),
                                  train_dataloader, seed=seed)
        test_dl = _cached_loader(extract_features(model, test_dataloader, device, "test features"),
                                 test_dataloader, seed=seed)
        fit = head  # the optimizer already holds the head's parameters
    for epoch in tqdm(range(epochs), desc="epochs"):
        train_loss, train_acc = train_step(fit, train_dl, loss_fn, optimizer, device)
        test_loss, test_acc = test_step(fit, test_dl, loss_fn, device)
        print(f"Epoch: {epoch + 1} | train_loss: {train_loss:.4f} | train_acc: {train_acc:.4f} | "
              f"test_loss: {test_loss:.4f} | test_acc: {test_acc:.4f}")
        for k, v in zip(results, (train_loss, train_acc, test_loss, test_acc), strict=True):
            results[k].append(v)
    return results
