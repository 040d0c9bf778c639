"""The original course's calls (lesson 09 and its going_modular), made its way, work here.

Keyword names, argument order and return shapes are the course's; each test names the call it checks."""
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
import torch
import torchvision
from torchvision import transforms as T

from going_modular import data_setup, engine, utils
from going_modular.model_builder import create_model
from helper_functions import plot_loss_curves, pred_and_plot_image, set_seeds

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def course_dirs(shared_data, tmp_path_factory):
    """`download_data(source=..., destination=..., remove_source=True)` run from a fresh working folder."""
    work = tmp_path_factory.mktemp("course")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        os.environ.setdefault(data_setup.MIRROR_ENV, str(shared_data))
        image_path = data_setup.download_data(
            source="https://github.com/mrdbourke/pytorch-deep-learning/raw/main/data/pizza_steak_sushi_20_percent.zip",
            destination="pizza_steak_sushi_20_percent", remove_source=True)
    finally:
        os.chdir(cwd)
    assert image_path == Path("data") / "pizza_steak_sushi_20_percent"  # the course's data/<destination>
    assert not list((work / "data").glob("*.zip"))  # remove_source=True: no zip left
    return work / image_path


@pytest.fixture(scope="module")
def trained(course_dirs):
    """create_dataloaders + engine.train exactly as lesson 09 calls them (2 epochs on a few batches)."""
    set_seeds()
    model, transforms = create_model("effnet_lite0", num_classes=3)
    train_dataloader, test_dataloader, class_names = data_setup.create_dataloaders(
        train_dir=course_dirs / "train", test_dir=course_dirs / "test", transform=transforms, batch_size=16)
    train_dataloader = data_setup.take_batches(train_dataloader, 3)
    test_dataloader = data_setup.take_batches(test_dataloader, 1)
    optimizer = torch.optim.Adam(params=model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    results = engine.train(model=model, train_dataloader=train_dataloader, test_dataloader=test_dataloader,
                           epochs=2, optimizer=optimizer, loss_fn=loss_fn, device="cpu")
    return model, transforms, class_names, results, (train_dataloader, test_dataloader, loss_fn, optimizer)


def test_engine_train_and_steps_the_course_way(trained):
    model, _, class_names, results, (train_dl, test_dl, loss_fn, optimizer) = trained
    assert class_names == ["pizza", "steak", "sushi"]
    assert list(results) == ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert all(len(v) == 2 for v in results.values()) and results["test_acc"][-1] >= 0.5  # chance: 1/3
    train_loss, train_acc = engine.train_step(model=model, dataloader=train_dl, loss_fn=loss_fn,
                                              optimizer=optimizer, device="cpu")
    test_loss, test_acc = engine.test_step(model=model, dataloader=test_dl, loss_fn=loss_fn, device="cpu")
    assert 0 <= train_acc <= 1 and 0 <= test_acc <= 1 and test_loss > 0


def test_plot_loss_curves_the_course_way(trained):
    fig = plot_loss_curves(results=trained[3])
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy"]


def test_save_model_and_the_course_loading_idiom(trained, tmp_path):
    """save_model(model, target_dir, model_name) -> load_state_dict(torch.load(f=..., map_location=...))."""
    model = trained[0]
    utils.save_model(model=model, target_dir=tmp_path / "models", model_name="09_pretrained_lite0.pth")
    path = tmp_path / "models" / "09_pretrained_lite0.pth"
    fresh, _ = create_model("effnet_lite0", num_classes=3, weights=None)
    fresh.load_state_dict(torch.load(f=path, map_location=torch.device("cpu")))
    assert torch.equal(fresh.classifier[1].weight, model.classifier[1].weight)
    # ...and the project's loader reads the sidecar save_model wrote beside it
    loaded, _, ckpt = utils.load_model(path, class_names=["pizza", "steak", "sushi"])
    assert ckpt["arch"] == "effnet_lite0"


def test_pred_and_store_the_course_way(trained, course_dirs):
    from going_modular.predictions import pred_and_store

    model, transforms, class_names = trained[:3]
    test_data_paths = sorted(course_dirs.glob("test/*/*.jpg"))[::30]
    pred_dicts = pred_and_store(paths=test_data_paths, model=model, transform=transforms,
                                class_names=class_names, device="cpu")
    assert len(pred_dicts) == len(test_data_paths)
    assert set(pred_dicts[0]) == {"image_path", "class_name", "pred_prob", "pred_class", "time_for_pred", "correct"}


@pytest.mark.parametrize("kind", ["pil", "tensor"])
def test_pred_and_plot_image_with_either_kind_of_transform(trained, shared_data, kind):
    """The project's transforms take a PIL image; the course's helper applies a transform to
    `read_image(path) / 255`, so a tensor-only transform (Normalize without ToTensor) works too."""
    model, transforms, class_names = trained[:3]
    transform = transforms if kind == "pil" else T.Compose([T.Resize((224, 224), antialias=True),
                                                           T.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])
    label, prob = pred_and_plot_image(model=model, image_path=shared_data / "custom_images" / "pizza-dad.jpeg",
                                      class_names=class_names, transform=transform, device="cpu")
    assert label in class_names and 1 / 3 < prob <= 1


def test_split_dataset_the_course_way(course_dirs):
    train_data = torchvision.datasets.ImageFolder(course_dirs / "train")
    split_1, split_2 = data_setup.split_dataset(dataset=train_data, split_size=0.2, seed=42)
    assert (len(split_1), len(split_2)) == (90, 360)
    assert split_1.indices == data_setup.split_dataset(train_data, 0.2, 42)[0].indices  # seeded
    assert not set(split_1.indices) & set(split_2.indices)


def test_remove_source_false_keeps_the_zip(shared_data, tmp_path):
    dest = data_setup.download_data(str(shared_data / "pizza_steak_sushi_20_percent.zip"), "pss",
                                    remove_source=False, data_dir=tmp_path)
    assert dest == tmp_path / "pss" and (tmp_path / "pizza_steak_sushi_20_percent.zip").is_file()


def test_set_seeds_the_course_way():
    set_seeds(seed=42)
    a = torch.randn(2)
    set_seeds(42)
    assert torch.equal(a, torch.randn(2))


def test_train_script_mode_help():
    """`python going_modular/train.py` (script mode, from the repo root) parses like `-m`."""
    out = [subprocess.run([sys.executable, *how, "--help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
           for how in (["going_modular/train.py"], ["-m", "going_modular.train"])]
    assert "--arch" in out[0] and out[0].split("options:")[1] == out[1].split("options:")[1]
