"""Saving/loading checkpoints, seeding, the device, model size and parameter counts.

A checkpoint is the course's: `save_model` writes the plain `state_dict`, so
`model.load_state_dict(torch.load(path))` works on it. What is needed to rebuild and use it
(architecture, class names, training info) goes beside it in a JSON sidecar (`X.pth` -> `X.json`),
which `load_model` reads. Checkpoints of the older single-file format (a dict holding the
state_dict and the metadata, e.g. the shipped checkpoints/*.pth) keep loading.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from going_modular.deploy.errors import UsageError, UserError
from going_modular.deploy.files import write_atomic

CHECKPOINT_FORMAT = "foodvision-checkpoint-v1"  # the older single-file dict
SIDECAR_FORMAT = "foodvision-checkpoint-v2"  # state_dict .pth + .json sidecar


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match what was asked for."""


def get_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else "cuda" when a GPU is available, else "cpu": chosen once, passed everywhere."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seeds(seed: int = 42) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def count_parameters(model: nn.Module) -> dict:
    """{"total": ..., "trainable": ...} parameter counts."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def model_size_mb(path: str | Path) -> float:
    """File size in MB (2**20 bytes), as the course reports it."""
    return Path(path).stat().st_size / 2**20


def sidecar_path(path: str | Path) -> Path:
    """Where a checkpoint's metadata lives: the same name with a .json suffix."""
    return Path(path).with_suffix(".json")


def save_model(model: nn.Module, target_dir: str | Path, model_name: str, class_names: list[str] | None = None,
               arch: str | None = None, info: dict | None = None) -> Path:
    """Save `model.state_dict()` to target_dir/model_name, the course's way, and its metadata beside it.

    The sidecar (model_name with .json) holds {"format", "arch", "class_names", "info"}: with them
    `load_model` rebuilds the model with `create_model(arch, len(class_names), weights=None)`, so a
    checkpoint never needs the network. `arch` defaults to the one `create_model` recorded on the
    model. Both files are written atomically (temp file + rename).
    """
    if not model_name.endswith((".pth", ".pt")):
        raise UsageError("model_name should end with '.pt' or '.pth'")
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / model_name
    meta = {"format": SIDECAR_FORMAT, "arch": arch or getattr(model, "arch", None),
            "class_names": list(class_names) if class_names is not None else None, "info": info or {}}
    write_atomic(path, lambda tmp: torch.save(model.state_dict(), tmp))
    write_atomic(sidecar_path(path), lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    print(f"[INFO] Saved model to: {path}")
    return path


def read_checkpoint(path: str | Path) -> dict:
    """{"arch", "class_names", "info", "state_dict", ...} of either checkpoint format, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        return ckpt
    sidecar = sidecar_path(path)
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    if meta.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{path} has no FoodVision metadata ({sidecar.name} beside it, "
                              f"written by going_modular.utils.save_model)")
    return {**meta, "state_dict": ckpt}


def load_model(path: str | Path, class_names: list[str] | None = None, device: str | torch.device = "cpu"):
    """Rebuild the architecture and load a checkpoint saved by `save_model`.

    Returns (model in eval mode, transforms, checkpoint dict with "arch", "class_names", "info").
    If `class_names` is given it must equal the checkpoint's (catches a wrong class-names file
    next to a model); a checkpoint saved without class names takes them from `class_names`.
    """
    from going_modular.model_builder import MODEL_NAMES, create_model

    ckpt = read_checkpoint(path)
    names = ckpt.get("class_names") or class_names
    if names is None:
        raise CheckpointError(f"{path} was saved without class names: pass class_names=")
    if class_names is not None and list(class_names) != list(names):
        raise CheckpointError(f"class names do not match checkpoint {path}: got {len(class_names)} names "
                              f"{list(class_names)[:5]}..., checkpoint has {len(names)} {names[:5]}...")
    if ckpt.get("arch") not in MODEL_NAMES:
        raise CheckpointError(f"{path}: unknown architecture {ckpt.get('arch')!r} (save_model(..., arch=) "
                              f"one of {MODEL_NAMES})")
    model, transforms = create_model(ckpt["arch"], num_classes=len(names), weights=None)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match architecture {ckpt['arch']!r} with "
                              f"{len(names)} classes: {str(e).splitlines()[0]}") from e
    ckpt = {**ckpt, "class_names": list(names), "info": ckpt.get("info", {})}
    return model.to(device).eval(), transforms, ckpt
