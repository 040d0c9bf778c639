"""Export a trained checkpoint as the deployable bundle: one ONNX file, int8 by default, that
describes itself (see `going_modular.deploy.bundle`) and is served without torch.

    python -m going_modular.export --checkpoint checkpoints/effnet_lite0_foodvision_mini.pth \
        --out demos/foodvision_mini/foodvision_mini.int8.onnx

The data defaults to what the checkpoint was trained on (recorded in it by `train`): real
training images calibrate int8, once, here; the test split measures the bundle's accuracy and its
top-1 agreement with eager PyTorch, and both go into the bundle. Serving never exports,
quantizes or calibrates.

What the graph does: it takes uint8 RGB pixels (N, H, W, 3), already resized and centre-cropped
like the training transform, and does the rest (to float, mean/std normalisation, the network)
itself, so the serving side needs no float image maths of its own.

Exporter: `torch.onnx.export(..., dynamo=True)` (the torch.export-based exporter; it needs the
pip package onnxscript and no network). The older TorchScript exporter's graph ran about 2x slower
in ONNX Runtime on FoodVision Mini: the dynamo exporter's optimizer folds more of the model.

int8: CNNs get static QDQ quantization (int8 weights and uint8 activations whose ranges are
calibrated on real images), which ONNX Runtime runs with integer kernels (VNNI on modern x86).
ViT gets dynamic quantization of its MatMul/Gemm (Linear) weights: its activations (attention,
LayerNorm, GELU) have outliers that static ranges clip, and its time is spent in the Linears.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from going_modular import data_setup
from going_modular.deploy.bundle import (
    BUNDLE_FORMAT,
    INPUT_NAME,
    METADATA_KEY,
    OOD_NAME,
    OUTPUT_NAME,
    PRECISIONS,
    BundleError,
)
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError, load_image
from going_modular.deploy.predictor import OnnxPredictor, preprocess_pixels
from going_modular.model_builder import head_name
from going_modular.utils import CheckpointError, load_model

DEFAULT_OPSET = 18
# Archs whose int8 model uses dynamic (weights-only) quantization; every other arch is a CNN: static.
DYNAMIC_QUANT_ARCHS = ("vit_b_16",)


class PixelsToLogits(nn.Module):
    """uint8 (N, H, W, 3) RGB pixels -> logits (and, with an open-set scorer, an OOD score per image).

    ToTensor + Normalize are folded into the graph. The network is split at its classifier head,
    so the pooled features the head sees also feed the open-set scorer: one backbone pass for both.
    """

    def __init__(self, model: nn.Module, mean, std, open_set: nn.Module | None = None):
        super().__init__()
        self.backbone = copy.deepcopy(model)
        self.head = getattr(model, head_name(model))
        setattr(self.backbone, head_name(model), nn.Identity())
        self.open_set = open_set
        # (x / 255 - mean) / std == (x - 255 mean) / (255 std): one subtract and one divide.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (N, D) the classifier head sees."""
        x = pixels.permute(0, 3, 1, 2).float()
        return self.backbone((x - self.mean) / self.std)

    def forward(self, pixels: torch.Tensor):
        features = self.features(pixels)
        if self.open_set is None:
            return self.head(features)
        return self.head(features), self.open_set(features)


class OpenSetScore(nn.Module):
    """Pooled features (N, D) -> OOD score (N,): above 1.0 means "not one of my classes".

    Two measured signals (benchmarks/open_set.py), each divided by its own threshold so that one
    score and one threshold (1.0) serve both:
    - distance: 1 - the cosine similarity to the k-th nearest training image of the known classes.
      Far from every training photo: not food at all (a cat, a rocket, a portrait).
    - reject: a linear classifier over the known classes plus other real Food-101 dishes; the
      probability it gives to the other dishes. Frozen features put other dishes close to
      pizza, steak or sushi, so distance alone misses most of them. Absent when no other dishes
      were given (FoodVision Big knows every class of its data).
    """

    def __init__(self, bank: torch.Tensor, k: int, distance_threshold: float, reject: nn.Module | None = None,
                 num_known: int = 0, reject_threshold: float = 1.0):
        super().__init__()
        self.register_buffer("bank", nn.functional.normalize(bank, dim=1))
        self.k, self.distance_threshold = k, distance_threshold
        self.reject, self.num_known, self.reject_threshold = reject, num_known, reject_threshold

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        similarity = nn.functional.normalize(features, dim=1) @ self.bank.T
        return 1 - torch.topk(similarity, self.k, dim=1).values[:, -1]

    def reject_prob(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.reject(features), dim=1)[:, self.num_known:].sum(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        score = self.distance(features) / self.distance_threshold
        if self.reject is not None:
            score = torch.maximum(score, self.reject_prob(features) / self.reject_threshold)
        return score


def input_spec(transform) -> dict:
    """What the eval transform does, as data: {"size", "resize", "interpolation", "mean", "std"}.

    Knows torchvision's weight presets (ImageClassification) and our Resize/CenterCrop/ToTensor/
    Normalize compositions; anything else is refused rather than served differently.
    """
    def first(value):
        return int(value[0] if isinstance(value, (list, tuple)) else value)

    if type(transform).__name__ == "ImageClassification":
        size, resize = first(transform.crop_size), first(transform.resize_size)
        interpolation, mean, std = transform.interpolation, transform.mean, transform.std
    else:
        steps = {type(t).__name__: t for t in getattr(transform, "transforms", [])}
        if set(steps) != {"Resize", "CenterCrop", "ToTensor", "Normalize"}:
            raise ValueError(f"cannot describe transform {transform} as a bundle input spec")
        size, resize = first(steps["CenterCrop"].size), first(steps["Resize"].size)
        interpolation, mean, std = steps["Resize"].interpolation, steps["Normalize"].mean, steps["Normalize"].std
    return {"layout": "NHWC", "dtype": "uint8", "size": size, "resize": resize,
            "interpolation": interpolation.value, "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def _replace_atomically(write, path: Path) -> Path:
    """Call write(tmp) then rename tmp to path: readers (other processes) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_onnx(model: nn.Module, path: str | os.PathLike, spec: dict, opset: int = DEFAULT_OPSET,
                open_set: nn.Module | None = None) -> Path:
    """Export `model` (eval mode, outputs logits) as an fp32 graph from uint8 pixels, dynamic batch axis;
    with `open_set` (an OpenSetScore) the graph has a second output, "ood_score"."""
    import onnx

    wrapped = PixelsToLogits(model, spec["mean"], spec["std"], open_set).eval()
    outputs = [OUTPUT_NAME] if open_set is None else [OUTPUT_NAME, OOD_NAME]
    size = spec["size"]
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)  # batch 2: 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=4096)

    def write(tmp: Path) -> None:
        torch.onnx.export(wrapped, (example,), tmp, dynamo=True, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
        onnx.checker.check_model(str(tmp))

    return _replace_atomically(write, Path(path))


class _PixelReader:
    """ONNX Runtime CalibrationDataReader: real images, preprocessed exactly as serving does."""

    def __init__(self, images, spec: dict):
        self._images = iter(images)
        self._spec = spec

    def get_next(self) -> dict | None:
        image = next(self._images, None)
        if image is None:
            return None
        return {INPUT_NAME: preprocess_pixels(image, self._spec)[None]}


def _float_nodes(onnx_path: Path) -> list[str]:
    """Nodes kept in fp32: the pixel normalisation, the first and last convolutions, the classifier.

    They are the layers most sensitive to 8-bit rounding (the stem sees raw pixels, the last
    layers decide the class) and cost little time: on FoodVision Mini this halves the largest
    probability change vs fp32 for ~0.1 ms.
    """
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    nodes = list(graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    before_stem = [n.name for n in nodes[:convs[0]]] if convs else []
    return before_stem + [nodes[i].name for i in convs[:1] + convs[-1:]] + \
        [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")] + _open_set_nodes(graph)


def _open_set_nodes(graph) -> list[str]:
    """Nodes that only the open-set score needs (not the logits): distances and probabilities
    near a threshold, which 8-bit rounding would move; they cost microseconds in fp32."""
    producer = {out: n for n in graph.node for out in n.output}
    needed, todo = set(), [OUTPUT_NAME]
    while todo:
        node = producer.get(todo.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            todo.extend(node.input)
    return [n.name for n in graph.node if n.name not in needed]


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration_images=None, spec: dict | None = None,
                  dynamic: bool = False) -> Path:
    """Quantize an fp32 pixel graph to int8.

    dynamic=False (CNNs): static QDQ quantization, per-channel int8 weights and uint8
    activations whose ranges come from `calibration_images` (real images; ~100 are plenty).
    dynamic=True (ViT): int8 MatMul/Gemm weights, activations quantized on the fly; no calibration.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    src, dst = Path(src), Path(dst)
    if dynamic:
        return _replace_atomically(lambda tmp: quantize_dynamic(
            src, tmp, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8), dst)
    if not calibration_images or spec is None:
        raise ValueError("static quantization needs calibration images and the input spec")
    prepared = dst.with_name(f"{dst.name}.{os.getpid()}.prep.tmp")
    try:
        # Shape inference + fusions (Conv+BN...) first, as ONNX Runtime recommends, so the
        # quantizer sees the graph the runtime will execute.
        quant_pre_process(src, prepared, skip_symbolic_shape=True)
        # uint8 activations x int8 weights: the combination x86 VNNI kernels run fastest
        # (int8 activations measured ~3.5x slower on FoodVision Mini).
        return _replace_atomically(lambda tmp: quantize_static(
            prepared, tmp, _PixelReader(calibration_images, spec), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_float_nodes(prepared)), dst)
    finally:
        prepared.unlink(missing_ok=True)


def write_metadata(path: Path, meta: dict) -> None:
    """Store the bundle description in the ONNX file's metadata_props (replacing any earlier one)."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    onnx.save(model, str(path))


def labelled_images(data: dict, split: str) -> list[tuple[Path, str]]:
    """[(image path, class name)] of a split: an ImageFolder root (root/split/class/*.jpg), or a
    Food101 root (root/food-101/meta/split.json), or a course dataset name (downloaded once)."""
    if data.get("food101_root"):
        meta_dir = Path(data["food101_root"]) / "food-101"
        index = meta_dir / "meta" / f"{split}.json"
        if not index.is_file():
            raise data_setup.DataError(f"no Food-101 {split} split at {index}")
        listing = json.loads(index.read_text())
        return [(meta_dir / "images" / f"{item}.jpg", name) for name in sorted(listing) for item in listing[name]]
    root = Path(data["data"])
    if not (root / split).is_dir():
        url = data_setup.COURSE_DATA_URL.replace("pizza_steak_sushi_20_percent", data["data"])
        root = data_setup.download_data(url, Path(data.get("data_dir") or "data") / data["data"])
    data_setup.check_image_folder(root / split)
    return [(p, p.parent.name) for p in sorted((root / split).glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def measure(bundle: OnnxPredictor, eager_model: nn.Module, transform, images: list[tuple[Path, str]],
            batch_size: int = 32) -> dict:
    """Accuracy of the bundle on labelled images, its top-1 agreement with the eager model, and
    (with an open-set score) the share of these known-class images it flags as unknown."""
    correct = agree = flagged = n = 0
    for i in range(0, len(images), batch_size):
        chunk = []
        for path, name in images[i:i + batch_size]:
            try:  # each path decoded as serving does (bundle.preprocess) and as training did (transform)
                chunk.append((bundle.preprocess(path), transform(load_image(path)), name))
            except InvalidImageError:
                continue  # an unreadable test image counts for neither
        if not chunk:
            continue
        probs, ood = bundle.scores([pixels for pixels, _, _ in chunk])
        preds = probs.argmax(1)
        flagged += 0 if ood is None else int((ood > bundle.ood_threshold).sum())
        with torch.inference_mode():
            ref = eager_model(torch.stack([x for _, x, _ in chunk])).argmax(1).numpy()
        correct += sum(bundle.class_names[p] == name for p, (_, _, name) in zip(preds, chunk, strict=True))
        agree += int((preds == ref).sum())
        n += len(chunk)
    if n == 0:
        raise data_setup.DataError("no readable test images to measure the bundle on")
    metrics = {"test_acc": round(correct / n, 4), "test_images": n, "top1_agreement_with_eager": round(agree / n, 4)}
    if bundle.ood_threshold is not None:
        metrics["test_flagged_unknown"] = round(flagged / n, 4)
    return metrics


OPEN_SET_K = 10  # k-th nearest training image: robust to a few odd training photos
# Training images kept for the distance: at most 40 per class (Mini: 120) and 505 in all (Big: 5 of
# each of its 101 dishes), so the bank adds at most 2.5 MB (fp32) to the bundle.
OPEN_SET_BANK_PER_CLASS, OPEN_SET_BANK_IMAGES = 40, 505
OPEN_SET_FOLDS = 5


def training_features(wrapped: PixelsToLogits, images: list[Path], spec: dict, batch_size: int = 32,
                      cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Pooled backbone features (N, D) of image files, preprocessed exactly as serving does.

    cache_dir: features are kept there per image file, keyed by the architecture, its first weights
    and the input spec, so exporting Big and Mini (whose other dishes are Big's photos) runs the
    backbone once per photo."""
    cache, path = {}, None
    if cache_dir is not None:
        first = next(wrapped.backbone.parameters()).detach().double().sum().item()
        key = json.dumps({"arch": getattr(wrapped.backbone, "arch", ""), "weights": first, "input": spec})
        path = Path(cache_dir) / f"export-features-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
        if path.is_file():
            saved = torch.load(path, weights_only=True)
            cache = dict(zip((os.path.realpath(p) for p in saved["paths"]), saved["features"], strict=True))
    images = [os.path.realpath(p) for p in images]  # one key per photo however its folder was named
    missing = [p for p in dict.fromkeys(images) if p not in cache]
    for i in range(0, len(missing), batch_size):
        chunk = missing[i:i + batch_size]
        pixels = [preprocess_pixels(p, spec) for p in chunk]
        with torch.inference_mode():
            cache.update(zip(chunk, wrapped.features(torch.from_numpy(np.stack(pixels))), strict=True))
    if path is not None and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(cache)
        _replace_atomically(lambda tmp: torch.save({"paths": names, "features": torch.stack([cache[n] for n in names])},
                                                   tmp), path)
    if not images:
        raise data_setup.DataError("no images to compute features of")
    return torch.stack([cache[p] for p in images])


def fit_reject(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-2) -> nn.Module:
    """A class-balanced, L2-regularised linear classifier on standardised features (L-BFGS, deterministic)."""
    torch.manual_seed(0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    linear = nn.Linear(features.shape[1], num_classes)
    counts = torch.bincount(labels, minlength=num_classes).float()
    class_weight = counts.sum() / (num_classes * counts.clamp(min=1))
    x = (features - mean) / std
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(x), labels, weight=class_weight)
        loss = loss + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    # Standardisation folded into the layer: W((f - m) / s) + b == (W / s) f + (b - W m / s).
    folded = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        folded.weight.copy_(linear.weight / std)
        folded.bias.copy_(linear.bias - (linear.weight / std) @ mean)
    return folded.eval()


def fit_open_set(known: torch.Tensor, known_labels: torch.Tensor, other: torch.Tensor, other_labels: torch.Tensor,
                 flag_rate: float = 0.05, seed: int = 42) -> tuple[OpenSetScore, dict]:
    """Fit the open-set scorer and set its thresholds by cross-validation on training images only.

    known: features of the known classes' training images; other: features of other real dishes
    (may be empty). Each image is scored by a scorer fitted without its fold, so the thresholds
    see distances and probabilities of unseen photos, as serving will. The distance threshold
    flags 1% of known-class photos; the reject threshold spends the rest of `flag_rate`.
    """
    num_known = int(known_labels.max()) + 1
    features, labels = torch.cat([known, other]), torch.cat([known_labels, other_labels + num_known])
    is_known = labels < num_known
    folds = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)) % OPEN_SET_FOLDS
    per_class = min(OPEN_SET_BANK_PER_CLASS, OPEN_SET_BANK_IMAGES // num_known)
    in_bank = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_known):
        in_bank[torch.nonzero(labels == c).flatten()[:per_class]] = True
    distance, reject = torch.zeros(len(labels)), torch.zeros(len(labels))
    for fold in range(OPEN_SET_FOLDS):
        held, kept = folds == fold, folds != fold
        scorer = OpenSetScore(features[kept & in_bank], OPEN_SET_K, 1.0)
        distance[held] = scorer.distance(features[held])
        if len(other):
            scorer.reject, scorer.num_known = fit_reject(features[kept], labels[kept], int(labels.max()) + 1), num_known
            with torch.no_grad():
                reject[held] = scorer.reject_prob(features[held])
    distance_threshold = float(torch.quantile(distance[is_known], 0.99))
    reject_threshold = float(torch.quantile(reject[is_known], 1 - (flag_rate - 0.01))) if len(other) else 1.0
    head = fit_reject(features, labels, int(labels.max()) + 1) if len(other) else None
    bank = features[in_bank]
    scorer = OpenSetScore(bank, OPEN_SET_K, distance_threshold, head, num_known, reject_threshold)
    oof = torch.maximum(distance / distance_threshold, reject / reject_threshold)
    other_flagged = round(float((oof[~is_known] > 1).float().mean()), 4) if len(other) else None
    info = {"threshold": 1.0, "output": OOD_NAME,
            "method": "max(k-NN cosine distance to training features, P(other Food-101 dish)), each over its threshold"
                      if len(other) else "k-NN cosine distance to training features, over its threshold",
            "k": OPEN_SET_K, "bank_images": len(bank), "distance_threshold": round(distance_threshold, 6),
            "reject_threshold": round(reject_threshold, 6) if len(other) else None,
            "other_classes": int(other_labels.max()) + 1 if len(other) else 0,
            "cross_validated": {"known_flagged": round(float((oof[is_known] > 1).float().mean()), 4),
                                "other_flagged": other_flagged,
                                "known_images": int(is_known.sum()), "other_images": int((~is_known).sum())}}
    return scorer, info


def menu_photos(folder: str | os.PathLike, class_names: list[str]) -> list[Path]:
    """The clean photos of a calibration folder (FOLDER/<class>/*.jpg, every class one of the model's)."""
    folder = Path(folder)
    data_setup.check_image_folder(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if unknown := [c for c in classes if c not in class_names]:
        raise data_setup.DataError(f"calibration photos {folder}: {', '.join(unknown)} is not a class of the model "
                                   f"({len(class_names)} classes: {', '.join(class_names[:5])}...)")
    return [p for p in sorted(folder.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def flag_threshold(scores: torch.Tensor, flag_rate: float) -> float:
    """The smallest threshold that flags (score > threshold) at most `flag_rate` of `scores`."""
    allowed = int(flag_rate * len(scores) + 1e-9)
    return float(torch.sort(scores, descending=True).values[min(allowed, len(scores) - 1)])


def calibrate_open_set(scorer: OpenSetScore, info: dict, menu: torch.Tensor, flag_rate: float = 0.05) -> None:
    """Set the scorer's thresholds on the features of clean photos of the known classes (not
    training photos: Food-101's are deliberately uncleaned, so a share of them look like other
    dishes and cross-validating on them set the threshold too conservatively). The distance
    threshold flags 1% of them; the reject threshold spends the rest of `flag_rate`."""
    distance = scorer.distance(menu)
    scorer.distance_threshold = flag_threshold(distance, 0.01)
    if scorer.reject is not None:
        with torch.no_grad():
            reject = scorer.reject_prob(menu)
        by_distance = distance > scorer.distance_threshold
        budget = int(flag_rate * len(menu) + 1e-9) - int(by_distance.sum())
        rest = reject[~by_distance]
        scorer.reject_threshold = flag_threshold(rest, budget / len(rest)) if budget > 0 else float(rest.max())
    info.update({"distance_threshold": round(scorer.distance_threshold, 6),
                 "reject_threshold": round(scorer.reject_threshold, 6) if scorer.reject is not None else None})


def build_open_set(model: nn.Module, spec: dict, class_names: list[str], data: dict, other_root: str | None,
                   log=print, calibration_photos: str | None = None,
                   feature_cache: str | None = None) -> tuple[OpenSetScore, dict]:
    """The open-set scorer from the training images of `data` and, from `other_root` (a Food-101
    root), the training images of dishes that are not in `class_names`; its thresholds come from
    `calibration_photos` (clean photos of the known classes) when given, else cross-validation."""
    wrapped = PixelsToLogits(model, spec["mean"], spec["std"]).eval()
    train = labelled_images(data, "train")
    other = [(p, n) for p, n in labelled_images({"food101_root": other_root}, "train")] if other_root else []
    other = [(p, n) for p, n in other if n not in class_names]
    other_names = sorted({n for _, n in other})
    menu = menu_photos(calibration_photos, class_names) if calibration_photos else []
    log(f"[export] open set: features of {len(train)} training images and {len(other)} of "
        f"{len(other_names)} other dishes")
    known = training_features(wrapped, [p for p, _ in train], spec, cache_dir=feature_cache)
    known_labels = torch.tensor([class_names.index(n) for _, n in train])
    others = training_features(wrapped, [p for p, _ in other], spec, cache_dir=feature_cache) if other else known[:0]
    other_labels = torch.tensor([other_names.index(n) for _, n in other], dtype=torch.long)
    scorer, info = fit_open_set(known, known_labels, others, other_labels)
    info["other_root"] = Path(other_root).name if other_root else None
    if menu:
        calibrate_open_set(scorer, info, training_features(wrapped, menu, spec))
        info["calibration_photos"] = {"folder": Path(calibration_photos).name, "images": len(menu)}
    return scorer, info


def calibrate_bundle_threshold(bundle: OnnxPredictor, photos: list[Path], flag_rate: float = 0.05) -> dict:
    """The bundle's own threshold: at most `flag_rate` of the clean calibration photos flagged by
    the int8 graph itself (its features differ slightly from the fp32 ones the scorer was fitted on)."""
    scores = np.concatenate([bundle.scores([bundle.preprocess(p) for p in photos[i:i + 32]])[1]
                             for i in range(0, len(photos), 32)])
    threshold = flag_threshold(torch.from_numpy(scores), flag_rate)
    return {"threshold": threshold, "flagged": round(float((scores > threshold).mean()), 4)}


def sha256sum(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_bundle(checkpoint: str | os.PathLike, out: str | os.PathLike, precision: str = "int8",
                  data: dict | None = None, num_calibration: int = 100, seed: int = 42,
                  opset: int = DEFAULT_OPSET, other_dishes: str | None = None, log=print,
                  calibration_photos: str | None = None, feature_cache: str | None = None) -> dict:
    """Checkpoint -> bundle at `out`. Returns the bundle's metadata (also stored inside it).

    data: {"data": course dataset name or ImageFolder root, "data_dir": ...} or {"food101_root": ...};
    default: what the checkpoint was trained on. other_dishes: a Food-101 root whose training
    images of classes the model does not know teach the open-set score what "another dish" looks like.
    calibration_photos: a folder of clean photos of the known classes (FOLDER/<class>/*.jpg), used
    for nothing else: the open-set threshold flags at most 5% of them (default: cross-validation
    on the training photos). feature_cache: a folder keeping the open set's backbone features.
    """
    import onnxruntime

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    checkpoint, out = Path(checkpoint), Path(out)
    model, transform, ckpt = load_model(checkpoint)
    arch = ckpt["arch"]
    data = data or {k: v for k, v in ckpt.get("info", {}).get("args", {}).items()
                    if k in ("data", "data_dir", "food101_root")}
    if not data.get("data") and not data.get("food101_root"):
        raise data_setup.DataError(f"{checkpoint} does not record its training data: pass --data or --food101-root")
    spec = input_spec(transform)
    test = labelled_images(data, "test")
    if unknown := sorted({name for _, name in test} - set(ckpt["class_names"])):
        raise data_setup.DataError(
            f"{checkpoint} knows {len(ckpt['class_names'])} classes but its test data have "
            f"{len({name for _, name in test})}: {len(unknown)} it was not trained on ({', '.join(unknown[:3])}...); "
            f"export it with the data it was trained on")
    meta = {"format": BUNDLE_FORMAT, "arch": arch, "class_names": list(ckpt["class_names"]), "precision": precision,
            "input": spec, "source": {"checkpoint": checkpoint.name, "sha256": sha256sum(checkpoint)},
            "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}
    start = time.perf_counter()
    fp32 = out.with_name(f"{out.name}.{os.getpid()}.fp32.tmp")
    staged = out.with_name(f"{out.name}.{os.getpid()}.staged.tmp")
    try:
        open_set, meta["open_set"] = build_open_set(model, spec, meta["class_names"], data, other_dishes, log,
                                                    calibration_photos, feature_cache)
        cv = meta["open_set"]["cross_validated"]
        others = f", {cv['other_flagged']:.1%} of other dishes" if cv["other_flagged"] is not None else ""
        log(f"[export] open set (cross-validated on training images): {cv['known_flagged']:.1%} of known-class "
            f"photos flagged{others}")
        log(f"[export] {checkpoint} ({arch}) -> ONNX fp32")
        export_onnx(model, fp32, spec, opset, open_set)
        if precision == "fp32":
            os.replace(fp32, staged)
        elif arch in DYNAMIC_QUANT_ARCHS:
            log("[export] int8: dynamic quantization of the Linear layers")
            quantize_int8(fp32, staged, dynamic=True)
        else:
            train = [p for p, _ in labelled_images(data, "train")]
            calibration = random.Random(seed).sample(train, min(num_calibration, len(train)))
            log(f"[export] int8: calibrating activation ranges on {len(calibration)} real training images")
            quantize_int8(fp32, staged, calibration, spec)
            meta["calibration"] = {"images": len(calibration), "seed": seed, "method": "minmax"}
        write_metadata(staged, meta)
        if calibration_photos:
            menu = menu_photos(calibration_photos, meta["class_names"])
            meta["open_set"]["calibration_photos"].update(calibrate_bundle_threshold(OnnxPredictor(staged), menu))
            meta["open_set"]["threshold"] = meta["open_set"]["calibration_photos"]["threshold"]
            log(f"[export] open-set threshold {meta['open_set']['threshold']:.4f}: "
                f"{meta['open_set']['calibration_photos']['flagged']:.1%} of {len(menu)} calibration photos flagged")
            write_metadata(staged, meta)
        log(f"[export] measuring the bundle on {len(test)} test images")
        meta["metrics"] = measure(OnnxPredictor(staged), model, transform, test)
        write_metadata(staged, meta)
        os.replace(staged, out)
    finally:
        fp32.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
    m = meta["metrics"]
    log(f"[export] {out} ({out.stat().st_size / 2**20:.2f} MB, {precision}) in {time.perf_counter() - start:.0f} s: "
        f"test accuracy {m['test_acc']:.2%} on {m['test_images']} images, "
        f"top-1 agreement with eager {m['top1_agreement_with_eager']:.2%}")
    return meta


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="a .pth saved by going_modular.train")
    p.add_argument("--out", type=Path, default=None, help="bundle to write (default: CHECKPOINT.<precision>.onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default="int8")
    p.add_argument("--data", default=None, help="course dataset name or folder with train/ and test/ "
                                                "(default: the checkpoint's training data)")
    p.add_argument("--data-dir", default="data", help="where a downloaded course dataset is extracted")
    p.add_argument("--food101-root", default=None, help="a Food101-layout root instead of --data")
    p.add_argument("--other-dishes", default=None,
                   help="a Food-101-layout root: its training photos of dishes the model does not know teach "
                        "the open-set score (e.g. ../shared/data/food101_34 for FoodVision Mini)")
    p.add_argument("--calibration-photos", default=None,
                   help="a folder of clean photos of the model's classes (FOLDER/<class>/*.jpg, e.g. "
                        "../shared/data/menu_calibration): the open-set threshold flags at most 5%% of them")
    p.add_argument("--feature-cache", default=None,
                   help="folder keeping the open set's backbone features between exports (e.g. models/features)")
    p.add_argument("--num-calibration", type=int, default=100, help="real training images that calibrate int8")
    p.add_argument("--seed", type=int, default=42, help="seed of the calibration sample")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    return p


def main(argv=None) -> dict:
    args = get_args_parser().parse_args(argv)
    out = args.out or args.checkpoint.with_suffix(f".{args.precision}.onnx")
    data = None
    if args.food101_root:
        data = {"food101_root": args.food101_root}
    elif args.data:
        data = {"data": args.data, "data_dir": args.data_dir}
    try:
        return export_bundle(args.checkpoint, out, args.precision, data, args.num_calibration, args.seed, args.opset,
                             args.other_dishes, calibration_photos=args.calibration_photos,
                             feature_cache=args.feature_cache)
    except (CheckpointError, BundleError, data_setup.DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
