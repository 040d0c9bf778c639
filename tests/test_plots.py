"""The comparison plot draws every model, the goal lines, and marks untrained models."""
import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from going_modular.plots import plot_speed_vs_accuracy  # noqa: E402


def test_speed_vs_accuracy_plot(tmp_path):
    df = pd.DataFrame({"model": ["effnet_lite0", "vit_b_16"], "test_acc": [0.97, 0.33],
                       "time_per_pred_cpu": [0.02, 0.23], "model_size_mb": [13.1, 327.0],
                       "pretrained": [True, False]})
    fig = plot_speed_vs_accuracy(df, goal_seconds=0.03, path=tmp_path / "plot.png")
    ax = fig.axes[0]
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    texts = [t.get_text() for t in ax.texts]
    assert texts[0].startswith("effnet_lite0 | 13 MB") and "untrained" in texts[1]
    assert [line.get_xdata()[0] for line in ax.lines][0] == 0.03  # the real-time goal line
    sizes = sorted(s for c in ax.collections for s in c.get_sizes())
    assert sizes == [13.1 * 8, 327.0 * 8]  # bubble area follows model size
