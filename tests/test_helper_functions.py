"""The notebook helpers: re-exports are the going_modular functions, plots draw real data."""
import matplotlib

matplotlib.use("Agg")

import helper_functions as hf
from going_modular import data_setup, predictions, utils
from going_modular.utils import load_model


def test_reexports_are_not_copies():
    assert hf.download_data is data_setup.download_data
    assert hf.set_seeds is utils.set_seeds
    assert hf.pred_and_plot_image is predictions.pred_and_plot_image


def test_walk_through_dir_counts_real_images(pss_dir, capsys):
    rows = dict((p, (d, f)) for p, d, f in hf.walk_through_dir(pss_dir))
    assert rows[str(pss_dir)] == (2, 0)
    assert rows[str(pss_dir / "test" / "steak")] == (0, 58)
    assert "58 images" in capsys.readouterr().out


def test_plot_loss_curves():
    results = {"train_loss": [1.0, 0.5, 0.3], "test_loss": [0.9, 0.6, 0.4],
               "train_acc": [0.5, 0.8, 0.9], "test_acc": [0.6, 0.8, 0.85]}
    fig = hf.plot_loss_curves(results)
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train_loss", "test_loss"]
    assert list(acc_ax.lines[1].get_ydata()) == results["test_acc"]


def test_pred_and_plot_image_on_a_real_photo(mini_checkpoint, shared_data):
    model, transform, ckpt = load_model(mini_checkpoint)
    label, prob = hf.pred_and_plot_image(model, shared_data / "custom_images" / "pizza-dad.jpeg",
                                         ckpt["class_names"], transform)
    assert label == "pizza" and prob > 0.8
    import matplotlib.pyplot as plt

    assert plt.gca().get_title().startswith("Pred: pizza")
    plt.close("all")
