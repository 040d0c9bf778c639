"""Eager CPU speed of each convolutional architecture with NCHW and channels_last (NHWC) weights.

    python -m benchmarks.memory_format              # every registered convnet, median of 30
    python -m benchmarks.memory_format --quick      # CI: 3 passes each

One image at each architecture's own eval size, batch 1, 1 thread, after 5 warm-up
passes; both memory formats in the same process, timed in alternation, so the ratio is fair. `create_model`
converts an architecture to channels_last only where this table shows it faster (`channels_last`
in its registry entry).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from PIL import Image

from going_modular.deploy import cli
from going_modular.model_builder import REGISTRY, create_model


def medians_ms(models: list[torch.nn.Module], x: torch.Tensor, runs: int) -> list[float]:
    """Median forward time of each model, timed in alternation (a, b, a, b, ...) so that neither
    format gets the warmer caches or clocks: measured one after the other, whichever went second
    looked 5-10% faster."""
    times = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            for _ in range(5):
                model(x)
        for _ in range(runs):
            for model, out in zip(models, times, strict=True):
                start = time.perf_counter()
                model(x)
                out.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed forward passes per format")
    parser.add_argument("--quick", action="store_true", help="CI: 3 timed passes per format")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    runs = 3 if args.quick else args.runs
    torch.set_num_threads(1)
    print("| arch | NCHW ms | channels_last ms | speed-up | create_model uses |\n|---|---|---|---|---|")
    for name, arch in REGISTRY.items():
        model, transforms = create_model(name, num_classes=3, weights=None)
        x = torch.rand_like(transforms(Image.new("RGB", (320, 240))).unsqueeze(0))  # the model's own input size
        nchw = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
        nhwc = model.eval().to(memory_format=torch.channels_last)
        nchw, nhwc = medians_ms([nchw, nhwc], x, runs)
        used = "channels_last" if arch.channels_last else "NCHW"
        print(f"| {name} | {nchw:.1f} | {nhwc:.1f} | {nchw / nhwc:.2f}x | {used} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
