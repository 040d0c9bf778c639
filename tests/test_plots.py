"""The comparison plot: every model drawn, goal lines, course reference, untrained rows apart, no overlaps."""
import itertools

import matplotlib
import pandas as pd
import pytest

from going_modular.plots import COURSE_REFERENCE, plot_speed_vs_accuracy

matplotlib.use("Agg")

# notebook 06's case that overlapped: one model in two runtimes a few ms apart, plus untrained rows
DF = pd.DataFrame({"model": ["effnet_lite0", "effnet_lite0 (onnx-int8)", "effnet_lite2", "effnetb2", "vit_b_16"],
                   "test_acc": [0.973, 0.973, 0.967, 0.33, 0.33],
                   "time_per_pred_cpu": [0.021, 0.0086, 0.035, 0.05, 0.23],
                   "model_size_mb": [13.1, 3.6, 19.0, 30.0, 327.0], "pretrained": [True, True, True, False, False]})


def test_speed_vs_accuracy_plot(tmp_path):
    fig = plot_speed_vs_accuracy(DF, goal_seconds=0.03, path=tmp_path / "plot.png")
    ax, ax_speed = fig.axes
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    texts = [t.get_text() for t in ax.texts]
    assert texts[0].startswith("effnet_lite0 | 13 MB") and not any("effnetb2" in t or "vit" in t for t in texts)
    assert any(t.startswith("course EffNetB2 96.9%, 0.027 s") for t in texts)
    assert any(t.startswith("course ViT-B/16 98.5%, 0.064 s") for t in texts)
    assert ax.lines[0].get_xdata()[0] == 0.03  # the real-time goal line
    sizes = sorted(s for s in ax.collections[0].get_sizes())
    assert sizes == [3.6 * 8, 13.1 * 8, 19.0 * 8]  # bubble area follows model size
    # untrained rows: speed only, in their own panel, named as such
    assert [t.get_text() for t in ax_speed.get_yticklabels()] == ["effnetb2", "vit_b_16"]
    assert [round(p.get_width(), 3) for p in ax_speed.patches] == [0.05, 0.23]
    assert "untrained" in ax_speed.get_title()


def test_no_two_labels_overlap():
    fig = plot_speed_vs_accuracy(DF)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 5
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)


def test_without_untrained_rows_one_panel():
    fig = plot_speed_vs_accuracy(DF[DF["pretrained"]], reference=COURSE_REFERENCE.iloc[:0])
    assert len(fig.axes) == 1 and len(fig.axes[0].texts) == 3


# notebook 06's table in an offline full run: its own row names, Lite0 eager and ONNX int8 at the same accuracy
# a few ms apart beside the course's EfficientNet-B2 diamond, B2 and ViT untrained
NOTEBOOK_06 = pd.DataFrame({"model": ["effnet_lite0_onnx_int8", "effnet_lite0", "effnetb2", "vit_b_16"],
                            "test_acc": [0.9733, 0.9733, 0.3, 0.3],
                            "time_per_pred_cpu": [0.0086, 0.0236, 0.0498, 0.2418],
                            "model_size_mb": [4.78, 13.14, 29.83, 327.36], "pretrained": [True, True, False, False]})


@pytest.mark.parametrize("df", [DF, NOTEBOOK_06], ids=["mixed", "notebook_06"])
def test_labels_are_disjoint_and_inside_the_axes(df):
    fig = plot_speed_vs_accuracy(df)
    ax, ax_speed = fig.axes
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert len(boxes) == int(df["pretrained"].sum()) + len(COURSE_REFERENCE)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    for text, box in boxes.items():
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, text
    untrained = df.loc[~df["pretrained"], "model"].tolist()
    assert [t.get_text() for t in ax_speed.get_yticklabels()] == untrained  # apart, speed only
    assert not any(name in text for name in untrained for text in boxes)
