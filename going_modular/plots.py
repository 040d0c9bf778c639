"""The speed-vs-accuracy plot: the picture the module's model choice rests on."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import pandas as pd

# The original course's published figures (lesson 09, FoodVision Mini, measured on Colab's CPU):
# a learner with internet who runs notebooks 02 and 03 should land near them.
COURSE_REFERENCE = pd.DataFrame({"model": ["course EffNetB2", "course ViT-B/16"], "test_acc": [0.969, 0.985],
                                 "time_per_pred_cpu": [0.027, 0.064]})


def _separate_labels(ax, texts, step_px: float = 3.0, max_moves: int = 60) -> None:
    """Move each label down (in steps) until its box overlaps no earlier label: no two labels overlap."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed = []
    for text in texts:
        for _ in range(max_moves):
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = text.xyann
            text.xyann = (x, y - step_px * 72 / fig.dpi * 4)
        placed.append(text.get_window_extent(renderer))


def plot_speed_vs_accuracy(df: pd.DataFrame, goal_seconds: float = 0.03, path: str | os.PathLike | None = None,
                           time_col: str = "time_per_pred_cpu", acc_col: str = "test_acc",
                           size_col: str = "model_size_mb", label_col: str = "model", goal_acc: float = 0.95,
                           reference: pd.DataFrame | None = COURSE_REFERENCE):
    """Accuracy (y) against seconds per prediction on CPU (x); bubble area = model size in MB.

    A dashed vertical line marks the real-time goal (`goal_seconds`, 0.03 s = 30 FPS) and a dotted
    horizontal one the accuracy goal: deployable models sit top-left. `reference` rows (the course's
    published figures) are drawn as labelled hollow diamonds. Rows with `pretrained == False`
    (untrained backbones: their timing is real, their accuracy is not a result) are not put on the
    accuracy axis: a second panel shows their speed only. No two labels overlap. Saves a PNG to
    `path` if given; returns the figure.
    """
    trained_mask = df["pretrained"].astype(bool) if "pretrained" in df else pd.Series(True, index=df.index)
    trained, untrained = df[trained_mask], df[~trained_mask]
    if len(untrained):
        fig, (ax, ax_speed) = plt.subplots(2, 1, figsize=(10, 9), height_ratios=[3, 1])
    else:
        fig, ax = plt.subplots(figsize=(10, 6))
    texts = []
    ax.scatter(trained[time_col], trained[acc_col], s=trained[size_col] * 8, alpha=0.6, edgecolors="black",
               c=[f"C{i}" for i in range(len(trained))])
    for _, row in trained.sort_values(acc_col, ascending=False).iterrows():
        texts.append(ax.annotate(f"{row[label_col]} | {row[size_col]:.0f} MB", (row[time_col], row[acc_col]),
                                 xytext=(8, 6), textcoords="offset points", fontsize=10))
    if reference is not None:
        ax.scatter(reference[time_col], reference[acc_col], marker="D", s=60, facecolors="none",
                   edgecolors="gray", label="course's published figures (Colab CPU)")
        for _, row in reference.iterrows():
            texts.append(ax.annotate(f"{row[label_col]} {row[acc_col]:.1%}, {row[time_col]} s",
                                     (row[time_col], row[acc_col]), xytext=(8, -14), textcoords="offset points",
                                     fontsize=9, color="dimgray"))
    times = pd.concat([trained[time_col], reference[time_col] if reference is not None else pd.Series(dtype=float)])
    ax.axvline(goal_seconds, color="red", linestyle="--",
               label=f"real-time goal: {goal_seconds} s per prediction ({int(1 / goal_seconds)}+ FPS)")
    ax.axhline(goal_acc, color="green", linestyle=":", label=f"accuracy goal: {goal_acc:.0%}")
    ax.set_xlabel("Time per prediction on CPU (seconds)")
    ax.set_ylabel("Test accuracy")
    ax.set_title("FoodVision Mini: accuracy vs speed (bubble area = model size)")
    ax.set_xlim(left=0, right=max(times.max() * 1.35, goal_seconds * 1.5))
    low = min([goal_acc, *trained[acc_col], *(reference[acc_col] if reference is not None else [])])
    ax.set_ylim(max(0.0, low - 0.05), 1.01)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)  # below the axes: covers no model
    ax.grid(alpha=0.3)
    if len(untrained):
        ax_speed.barh(untrained[label_col], untrained[time_col], color="lightgray", edgecolor="black")
        ax_speed.axvline(goal_seconds, color="red", linestyle="--")
        ax_speed.set_xlim(0, max(untrained[time_col].max(), goal_seconds) * 1.15)
        ax_speed.set_xlabel("Time per prediction on CPU (seconds)")
        ax_speed.set_title("Speed only: untrained backbones (offline run), accuracy not a result", fontsize=10)
    fig.tight_layout()
    _separate_labels(ax, texts)
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig
