"""The speed-vs-accuracy plot: the picture the module's model choice rests on."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import pandas as pd


def plot_speed_vs_accuracy(df: pd.DataFrame, goal_seconds: float = 0.03, path: str | os.PathLike | None = None,
                           time_col: str = "time_per_pred_cpu", acc_col: str = "test_acc",
                           size_col: str = "model_size_mb", label_col: str = "model", goal_acc: float = 0.95):
    """Scatter accuracy (y) against seconds per prediction (x); bubble area = model size in MB.

    A dashed vertical line marks the real-time goal (`goal_seconds`, 0.03 s = 30 FPS) and a
    dotted horizontal one the accuracy goal: deployable models sit top-left. Rows with
    `pretrained == False` (untrained backbones) are drawn hollow and labelled so. Saves a PNG
    to `path` if given; returns the figure.
    """
    fig, ax = plt.subplots(figsize=(10, 6))
    trained = df["pretrained"].astype(bool) if "pretrained" in df else pd.Series(True, index=df.index)
    for is_trained, group in df.groupby(trained):
        ax.scatter(group[time_col], group[acc_col], s=group[size_col] * 8, alpha=0.6,
                   facecolors=None if is_trained else "none", edgecolors="black",
                   c=None if not is_trained else [f"C{i}" for i in range(len(group))])
    for i, (_, row) in enumerate(df.sort_values(time_col).iterrows()):
        note = "" if trained[row.name] else "\n(untrained: accuracy not meaningful)"
        # Alternate above/below so neighbours (e.g. one model in two runtimes) stay readable.
        ax.annotate(f"{row[label_col]} | {row[size_col]:.0f} MB{note}", (row[time_col], row[acc_col]),
                    xytext=(8, -22 if i % 2 and row[acc_col] > 0.15 else 8), textcoords="offset points", fontsize=10)
    ax.axvline(goal_seconds, color="red", linestyle="--", label=f"real-time goal: {goal_seconds} s per prediction ({int(1 / goal_seconds)}+ FPS)")
    ax.axhline(goal_acc, color="green", linestyle=":", label=f"accuracy goal: {goal_acc:.0%}")
    ax.set_xlabel("Time per prediction on CPU (seconds)")
    ax.set_ylabel("Test accuracy")
    ax.set_title("FoodVision Mini: accuracy vs speed (bubble area = model size)")
    ax.set_xlim(left=0, right=max(df[time_col].max() * 1.3, goal_seconds * 1.5))
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)  # below the axes: covers no model
    ax.grid(alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig
