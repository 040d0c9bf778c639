"""Export a FoodVision checkpoint to ONNX and quantize it to int8, for fast CPU inference.

Exporter: `torch.onnx.export(..., dynamo=True)`, the torch.export-based exporter (the default
since torch 2.9; it needs the pip package onnxscript and nothing from the network). We measured
the alternative, the deprecated TorchScript exporter, on FoodVision Mini: its graph ran about 2x
slower in ONNX Runtime, because the dynamo exporter's graph optimizer folds more of the model.

int8: CNNs get static QDQ quantization (weights and activations int8, activation ranges
calibrated on real images), which ONNX Runtime runs with integer kernels (VNNI on modern x86).
ViT gets dynamic quantization of its MatMul/Gemm (Linear) weights: its activations (attention,
LayerNorm, GELU) have outliers that static ranges clip, and its time is spent in the Linears.

CLI (writes the files `Predictor(runtime="onnx"/"onnx-int8", cache_dir=DIR)` looks for):
    python -m going_modular.export --checkpoint demos/foodvision_mini/effnet_lite0_foodvision_mini.pth \
        --out models/onnx --calibration-dir data/pizza_steak_sushi_20_percent/train
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
from pathlib import Path

import torch
from torch import nn

from going_modular.predictions import load_image

DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "image", "logits"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Archs whose int8 model uses dynamic (weights-only) quantization; every other arch is a CNN: static.
DYNAMIC_QUANT_ARCHS = ("vit_b_16",)


def input_size(transform) -> int:
    """The square input size an eval transform produces (its centre-crop size)."""
    crop = getattr(transform, "crop_size", None)  # torchvision weights' ImageClassification
    if crop is None:
        crop = next(t.size for t in transform.transforms if type(t).__name__ == "CenterCrop")
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)


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


def export_onnx(model: nn.Module, path: str | os.PathLike, image_size: int, opset: int = DEFAULT_OPSET) -> Path:
    """Export `model` (eval mode, outputs logits) to one ONNX file with a dynamic batch axis.

    The graph takes "image" (batch, 3, image_size, image_size) float32 and returns "logits";
    the file is checked with onnx.checker before it replaces `path`.
    """
    import onnx

    model.eval()
    example = torch.randn(2, 3, image_size, image_size)  # batch 2: a size-1 dim would be specialised
    batch = torch.export.Dim("batch", min=1, max=4096)

    def write(tmp: Path) -> None:
        torch.onnx.export(model, (example,), tmp, dynamo=True, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
        onnx.checker.check_model(str(tmp))

    return _replace_atomically(write, Path(path))


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under `folder` (recursively), sorted for reproducibility."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def calibration_sample(images, n: int = 100, seed: int = 42) -> list:
    """A reproducible random sample of n images (a folder or a list), spread over all classes."""
    images = find_images(images) if isinstance(images, (str, os.PathLike)) else list(images)
    if not images:
        raise ValueError("no calibration images found")
    return random.Random(seed).sample(images, min(n, len(images)))


class _ImageReader:
    """ONNX Runtime CalibrationDataReader: feeds preprocessed real images, one at a time."""

    def __init__(self, images, transform):
        self._images = iter(images)
        self._transform = transform

    def get_next(self) -> dict | None:
        image = next(self._images, None)
        if image is None:
            return None
        return {INPUT_NAME: self._transform(load_image(image)).unsqueeze(0).numpy()}


def _float_layers(onnx_path: Path) -> list[str]:
    """Nodes kept in fp32: the first and last convolutions and the classifier.

    They are the layers most sensitive to 8-bit rounding (the stem sees raw pixels, the last
    layers decide the class) and cost little time: on FoodVision Mini this halves the largest
    probability change vs fp32 for ~0.1 ms.
    """
    import onnx

    nodes = onnx.load(str(onnx_path)).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    return convs[:1] + convs[-1:] + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]


def quantize_onnx_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration_images=None,
                       transform=None, dynamic: bool = False) -> Path:
    """Quantize an fp32 ONNX model to int8.

    dynamic=False (CNNs): static QDQ quantization, per-channel int8 weights and uint8
    activations whose ranges come from `calibration_images` (paths or images, preprocessed by
    `transform` exactly as at inference; ~100 real training images are plenty).
    dynamic=True (ViT): int8 MatMul/Gemm weights, activations quantized on the fly; no calibration.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)

    src, dst = Path(src), Path(dst)
    if dynamic:
        return _replace_atomically(lambda tmp: quantize_dynamic(
            src, tmp, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8), dst)
    if calibration_images is None or transform is None:
        raise ValueError("static quantization needs calibration_images and their transform")
    images = list(calibration_images)
    prepared = dst.with_name(f"{dst.name}.{os.getpid()}.prep.tmp")
    try:
        # Shape inference + fusions (Conv+BN...) first, as ONNX Runtime recommends, so the
        # quantizer sees the graph the runtime will execute.
        quant_pre_process(src, prepared, skip_symbolic_shape=True)
        # uint8 activations x int8 weights: the combination x86 VNNI kernels run fastest
        # (int8 activations measured ~3.5x slower on FoodVision Mini).
        return _replace_atomically(lambda tmp: quantize_static(
            prepared, tmp, _ImageReader(images, transform), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_float_layers(prepared)), dst)
    finally:
        prepared.unlink(missing_ok=True)


def onnx_paths(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(fp32 path, int8 path) for a checkpoint: named by its content hash, so a retrained
    checkpoint never picks up a stale export."""
    checkpoint = Path(checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    stem = Path(out_dir) / f"{checkpoint.stem}-{digest}"
    return stem.with_suffix(".onnx"), stem.with_suffix(".int8.onnx")


def ensure_onnx(checkpoint, out_dir, model: nn.Module, transform, arch: str, int8: bool = False,
                calibration_images=None, opset: int = DEFAULT_OPSET) -> Path:
    """The checkpoint's fp32 (or int8) ONNX file in out_dir, exported/quantized only if missing."""
    fp32, quantized = onnx_paths(checkpoint, out_dir)
    if not fp32.is_file():
        export_onnx(model, fp32, input_size(transform), opset)
    if not int8:
        return fp32
    if not quantized.is_file():
        if arch in DYNAMIC_QUANT_ARCHS:
            quantize_onnx_int8(fp32, quantized, dynamic=True)
        else:
            quantize_onnx_int8(fp32, quantized, calibration_images, transform)
    return quantized


def main(argv=None) -> None:
    from going_modular.utils import load_model, model_size_mb

    parser = argparse.ArgumentParser(description="Export a FoodVision checkpoint to ONNX (fp32 and int8).")
    parser.add_argument("--checkpoint", required=True, help="a .pth saved by going_modular.utils.save_model")
    parser.add_argument("--out", required=True, help="output folder (use it as Predictor's cache_dir)")
    parser.add_argument("--calibration-dir", help="folder of real training images (static int8 of CNNs)")
    parser.add_argument("--num-calibration", type=int, default=100, help="calibration images to sample")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--no-int8", action="store_true", help="export fp32 only")
    args = parser.parse_args(argv)

    model, transform, ckpt = load_model(args.checkpoint)
    arch = ckpt["arch"]
    int8 = not args.no_int8
    if int8 and arch not in DYNAMIC_QUANT_ARCHS and not args.calibration_dir:
        parser.error(f"{arch} is a CNN: static int8 needs --calibration-dir (or pass --no-int8)")
    calibration = calibration_sample(args.calibration_dir, args.num_calibration) if args.calibration_dir else None
    paths = [ensure_onnx(args.checkpoint, args.out, model, transform, arch, opset=args.opset)]
    if int8:
        paths.append(ensure_onnx(args.checkpoint, args.out, model, transform, arch, True, calibration, args.opset))
    for path in [Path(args.checkpoint), *paths]:
        print(f"{model_size_mb(path):8.2f} MB  {path}")


if __name__ == "__main__":
    main()
