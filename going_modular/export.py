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

import torch
from torch import nn

from going_modular import data_setup
from going_modular.deploy import cli
from going_modular.deploy.bundle import (
    BUNDLE_FORMAT,
    INPUT_NAME,
    METADATA_KEY,
    OOD_NAME,
    OUTPUT_NAME,
    PRECISIONS,
)
from going_modular.deploy.files import sha256sum, write_atomic
from going_modular.deploy.image import InvalidImageError, load_image
from going_modular.deploy.monitor.reference import REFERENCE_KEY, compute_reference
from going_modular.deploy.predictor import OnnxPredictor, preprocess_pixels
from going_modular.model_builder import head_name
from going_modular.open_set import build_open_set, calibrate_bundle_threshold, menu_photos
from going_modular.utils import load_model

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

    return write_atomic(path, write)


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
        return write_atomic(dst, lambda tmp: quantize_dynamic(
            src, tmp, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8))
    if not calibration_images or spec is None:
        raise ValueError("static quantization needs calibration images and the input spec")
    prepared = dst.with_name(f"{dst.name}.{os.getpid()}.prep.tmp")
    try:
        # Shape inference + fusions (Conv+BN...) first, as ONNX Runtime recommends, so the
        # quantizer sees the graph the runtime will execute.
        quant_pre_process(src, prepared, skip_symbolic_shape=True)
        # uint8 activations x int8 weights: the combination x86 VNNI kernels run fastest
        # (int8 activations measured ~3.5x slower on FoodVision Mini).
        return write_atomic(dst, lambda tmp: quantize_static(
            prepared, tmp, _PixelReader(calibration_images, spec), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_float_nodes(prepared)))
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


def feature_cache_key(model: nn.Module, spec: dict) -> str:
    """A folder name per (architecture, weights, input spec): cached open-set features of one model
    are never served to another (exporting Big and then Mini, whose other dishes are Big's photos,
    runs the backbone once per photo)."""
    first = next(model.parameters()).detach().double().sum().item()
    key = json.dumps({"arch": getattr(model, "arch", ""), "weights": first, "input": spec})
    return f"export-features-{hashlib.sha256(key.encode()).hexdigest()[:20]}"


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
    test = data_setup.labelled_images(data, "test")
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
        features = PixelsToLogits(model, spec["mean"], spec["std"]).eval().features
        cache = Path(feature_cache) / feature_cache_key(model, spec) if feature_cache else None
        open_set, meta["open_set"] = build_open_set(features, spec, meta["class_names"], data, other_dishes, log,
                                                    calibration_photos, cache)
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
            train = [p for p, _ in data_setup.labelled_images(data, "train")]
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
        # What the drift monitor compares live traffic with: the test split through the serving path.
        meta[REFERENCE_KEY] = compute_reference(OnnxPredictor(staged), [p for p, _ in test],
                                                description=f"test split ({len(test)} images)")
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


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    out = args.out or args.checkpoint.with_suffix(f".{args.precision}.onnx")
    data = None
    if args.food101_root:
        data = {"food101_root": args.food101_root}
    elif args.data:
        data = {"data": args.data, "data_dir": args.data_dir}
    export_bundle(args.checkpoint, out, args.precision, data, args.num_calibration, args.seed, args.opset,
                  args.other_dishes, calibration_photos=args.calibration_photos, feature_cache=args.feature_cache)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
