"""Saving/loading self-describing checkpoints, seeding, model size and parameter counts."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHECKPOINT_FORMAT = "foodvision-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match what was asked for."""


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


def save_model(model: nn.Module, target_dir: str | Path, model_name: str, class_names: list[str],
               arch: str | None = None, extra: dict | None = None) -> Path:
    """Save the state_dict plus what is needed to rebuild and use it.

    The file holds {"format", "arch", "class_names", "state_dict", ...extra}; `load_model`
    rebuilds the architecture with `create_model(arch, len(class_names), weights=None)`, so a
    checkpoint never needs the network. Written atomically (temp file + rename).
    """
    if not model_name.endswith((".pth", ".pt")):
        raise ValueError("model_name should end with '.pt' or '.pth'")
    arch = arch or getattr(model, "arch", None)
    if arch is None:
        raise ValueError("arch unknown: pass arch= (a name from model_builder.MODEL_NAMES)")
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / model_name
    ckpt = {"format": CHECKPOINT_FORMAT, "arch": arch, "class_names": list(class_names),
            "state_dict": model.state_dict(), **(extra or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    print(f"[INFO] Saved model to: {path}")
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict safely (weights_only), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a FoodVision checkpoint (saved by going_modular.utils.save_model)")
    return ckpt


def load_model(path: str | Path, class_names: list[str] | None = None, device: str | torch.device = "cpu"):
    """Rebuild the architecture and load a checkpoint saved by `save_model`.

    Returns (model in eval mode, transforms, checkpoint dict). If `class_names` is given it
    must equal the checkpoint's (catches a wrong class-names file next to a model).
    """
    from going_modular.model_builder import create_model

    ckpt = read_checkpoint(path)
    names = ckpt["class_names"]
    if class_names is not None and list(class_names) != list(names):
        raise CheckpointError(f"class names do not match checkpoint {path}: got {len(class_names)} names "
                              f"{list(class_names)[:5]}..., checkpoint has {len(names)} {names[:5]}...")
    model, transforms = create_model(ckpt["arch"], num_classes=len(names), weights=None)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match architecture {ckpt['arch']!r} with "
                              f"{len(names)} classes: {str(e).splitlines()[0]}") from e
    return model.to(device).eval(), transforms, ckpt
