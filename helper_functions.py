"""Helper functions used across the FoodVision notebooks.

Plotting and exploration helpers live here; data, model and prediction code lives in
`going_modular` and is re-exported below, so there is one copy of each function.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from going_modular.data_setup import download_data
from going_modular.predictions import pred_and_plot_image
from going_modular.utils import set_seeds

# re-exported for the notebooks (the course imports them from helper_functions)
__all__ = ["download_data", "pred_and_plot_image", "set_seeds", "walk_through_dir", "plot_loss_curves"]


def walk_through_dir(dir_path: str | Path) -> list[tuple[str, int, int]]:
    """Print (and return) how many sub-folders and images each folder under dir_path holds."""
    rows = []
    for dirpath, dirnames, filenames in sorted(os.walk(dir_path)):
        dirnames.sort()
        rows.append((dirpath, len(dirnames), len(filenames)))
        print(f"There are {len(dirnames)} directories and {len(filenames)} images in '{dirpath}'.")
    return rows


def plot_loss_curves(results: dict):
    """Plot train/test loss and accuracy curves from an engine.train results dict."""
    epochs = range(1, len(results["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4))
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(epochs, results[f"train_{metric}"], marker="o", label=f"train_{metric}")  # markers: 1 epoch still shows
        ax.plot(epochs, results[f"test_{metric}"], marker="o", label=f"test_{metric}")
        ax.set_title("Loss" if metric == "loss" else "Accuracy")
        ax.set_xlabel("Epochs")
        ax.legend()
    return fig
