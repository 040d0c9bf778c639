"""The command-line options that mean the same in several benchmarks."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_data_args(parser: argparse.ArgumentParser, batch_size: bool = True, quick: bool = False) -> None:
    """--data, the course dataset the benchmark measures on, (unless batch_size is False)
    --batch-size, the images per predict_batch call, and (with quick) --quick, its test split only."""
    if quick:
        parser.add_argument("--quick", action="store_true", help="the 150 test images instead of all 600")
    parser.add_argument("--data", type=Path, default=Path("data/pizza_steak_sushi_20_percent"),
                        help="the course dataset (extracted here first if missing; see FOODVISION_DATA_MIRROR)")
    if batch_size:
        parser.add_argument("--batch-size", type=int, default=8, help="images per predict_batch call")
