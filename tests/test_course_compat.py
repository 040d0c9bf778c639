"""The original course's calls (lesson 09 and its going_modular), made its way, work here.

Keyword names, argument order and return shapes are the course's; each test names the call it checks."""
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import matplotlib
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from going_modular import data_setup, engine, utils
from going_modular.model_builder import WeightsUnavailableError, create_model
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
    import pandas as pd  # sections 5.2-6: the list of dicts as a DataFrame

    test_pred_df = pd.DataFrame(pred_dicts)
    assert test_pred_df.correct.value_counts().sum() == len(test_data_paths)
    assert round(test_pred_df.time_for_pred.mean(), 4) > 0


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


def test_the_courses_nested_import_path():
    """Lesson 09: `from going_modular.going_modular import data_setup, engine` (and utils, predictions,
    model_builder): the same modules as `going_modular.<name>`, not copies."""
    import going_modular
    import going_modular.going_modular.engine
    from going_modular.going_modular import data_setup, engine, model_builder, predictions, utils

    assert going_modular.going_modular.engine is engine is going_modular.engine
    for module in (data_setup, model_builder, predictions, utils):
        assert module is sys.modules[module.__name__.replace(".going_modular.", ".")]
    from going_modular.going_modular.predictions import pred_and_store
    assert pred_and_store is going_modular.predictions.pred_and_store


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network (a proxy that refuses) and an empty TORCH_HOME: what a learner sees without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # urlopen builds its opener once, with the proxies of that moment, and keeps it: put the old one back
    # afterwards, or every later urlopen in this process (the tests' own servers on 127.0.0.1) goes to the proxy.
    monkeypatch.setattr(urllib.request, "_opener", None)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def course_head(in_features: int, num_classes: int, seed: int, dropout: float | None):
    """The head as lesson 09's create_*_model builds it: torch.manual_seed(seed), then the layers."""
    torch.manual_seed(seed)
    layers = [nn.Dropout(p=dropout, inplace=True)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(in_features=in_features, out_features=num_classes))


@pytest.mark.parametrize("name", ["effnetb2", "vit"])
def test_create_model_functions_the_course_way(name, offline):
    """`effnetb2, effnetb2_transforms = create_effnetb2_model(num_classes=3, seed=42)` (sections 3, 8, 10)
    and `vit, vit_transforms = create_vit_model(num_classes=3, seed=42)` (section 4). Offline the
    torchvision ImageNet weights cannot be downloaded: one clear line. Built untrained, it is the course's
    model: frozen backbone, the same seeded head, the weights' own transforms, interchangeable state_dicts."""
    from going_modular.going_modular import model_builder

    build = getattr(model_builder, f"create_{name}_model")
    with pytest.raises(WeightsUnavailableError) as err:
        build(num_classes=3, seed=42)
    assert "\n" not in str(err.value) and str(offline) in str(err.value) and "weights=None" in str(err.value)

    model, transforms = build(num_classes=3, seed=42, weights=None)
    if name == "effnetb2":
        head_attr, head, theirs = "classifier", course_head(1408, 3, 42, 0.3), torchvision.models.efficientnet_b2()
        weights = torchvision.models.EfficientNet_B2_Weights.DEFAULT
    else:
        head_attr, head, theirs = "heads", course_head(768, 3, 42, None), torchvision.models.vit_b_16()
        weights = torchvision.models.ViT_B_16_Weights.DEFAULT
    assert repr(transforms) == repr(weights.transforms())
    ours = getattr(model, head_attr)
    assert torch.equal(ours[-1].weight, head[-1].weight) and torch.equal(ours[-1].bias, head[-1].bias)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [f"{head_attr}.{len(head) - 1}.weight",
                                                                           f"{head_attr}.{len(head) - 1}.bias"]
    setattr(theirs, head_attr, head)
    theirs.load_state_dict(model.state_dict())  # strict: a checkpoint of either loads into the other
    model.load_state_dict(theirs.state_dict())


def test_tinyvgg_the_course_way(course_dirs, tmp_path):
    """The course's going_modular train.py: TinyVGG(input_shape=3, hidden_units=10, output_shape=...) on
    64x64 images, engine.train, utils.save_model; the file loads back with load_state_dict."""
    from going_modular.going_modular import data_setup, engine, model_builder, utils

    data_transform = T.Compose([T.Resize((64, 64)), T.ToTensor()])
    train_dataloader, test_dataloader, class_names = data_setup.create_dataloaders(
        train_dir=course_dirs / "train", test_dir=course_dirs / "test", transform=data_transform, batch_size=32)
    torch.manual_seed(42)
    model = model_builder.TinyVGG(input_shape=3, hidden_units=10, output_shape=len(class_names)).to("cpu")
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    results = engine.train(model=model, train_dataloader=data_setup.take_batches(train_dataloader, 3),
                           test_dataloader=data_setup.take_batches(test_dataloader, 1), loss_fn=loss_fn,
                           optimizer=optimizer, epochs=2, device="cpu")
    assert all(len(v) == 2 for v in results.values())
    before = model.conv_block_1[0].weight.detach().clone()
    engine.train_step(model=model, dataloader=data_setup.take_batches(train_dataloader, 1), loss_fn=loss_fn,
                      optimizer=optimizer, device="cpu")
    assert not torch.equal(model.conv_block_1[0].weight, before)  # the whole network trains, as in the course
    model_name = "05_going_modular_script_mode_tinyvgg_model.pth"
    utils.save_model(model=model, target_dir=tmp_path / "models", model_name=model_name)
    loaded = model_builder.TinyVGG(input_shape=3, hidden_units=10, output_shape=3)
    loaded.load_state_dict(torch.load(tmp_path / "models" / model_name))
    # registered like the other architectures: create_model builds the same layers (same state_dict keys)
    registered, transform = create_model("tinyvgg", num_classes=3, weights=None, freeze_backbone=False)
    registered.load_state_dict(loaded.state_dict())
    x = transform(Image.open(sorted(course_dirs.glob("test/pizza/*.jpg"))[0])).unsqueeze(0)
    assert torch.equal(registered.eval()(x), loaded.eval()(x))


@pytest.fixture(scope="module")
def demo_apps():
    from demos.foodvision_big import app as big
    from demos.foodvision_mini import app as mini
    return mini, big


@pytest.mark.parametrize("demo", ["mini", "big"])
def test_demo_predict_the_course_way(demo, demo_apps, pss_dir):
    """Section 7.2: `pred_dict, pred_time = predict(img=image)` on `Image.open(path)`; the dict holds every
    class (`{class_names[i]: float(pred_probs[0][i]) for i in range(len(class_names))}`) and gr.Label's
    num_top_classes shows the top few."""
    import gradio as gr

    app = demo_apps[0] if demo == "mini" else demo_apps[1]
    class_names = app.predictor.class_names
    path = pss_dir / "test" / "sushi" / "2416569.jpg" if demo == "mini" else app.HERE / "examples" / "ramen.jpg"
    image = Image.open(path)
    pred_dict, pred_time = app.predict(img=image)
    assert sorted(pred_dict) == sorted(class_names) and sum(pred_dict.values()) == pytest.approx(1, abs=1e-4)
    assert max(pred_dict, key=pred_dict.get) == ("sushi" if demo == "mini" else "ramen")
    assert isinstance(pred_time, float) and pred_time > 0
    num_top_classes = 3 if demo == "mini" else 5
    interface = gr.Interface(fn=app.predict, inputs=gr.Image(type="pil"),
                             outputs=[gr.Label(num_top_classes=num_top_classes, label="Predictions"),
                                      gr.Number(label="Prediction time (s)")],
                             examples=[[str(p)] for p in sorted((app.HERE / "examples").iterdir())],
                             title="FoodVision", description="", article="")
    shown = interface.output_components[0].postprocess(pred_dict)
    assert [c.label for c in shown.confidences] == sorted(pred_dict, key=pred_dict.get, reverse=True)[:num_top_classes]


def test_class_names_read_the_course_way():
    """Section 11.4: `class_names = [food_name.strip() for food_name in f.readlines()]` from the demo's
    class_names.txt gives the names the demo predicts, in order; Mini's app.py hard-codes its three."""
    from demos.foodvision_big.model import load_predictor as big_predictor
    from demos.foodvision_mini.model import load_predictor as mini_predictor

    with open(ROOT / "demos" / "foodvision_big" / "class_names.txt", "r") as f:
        class_names = [food_name.strip() for food_name in f.readlines()]
    assert class_names == big_predictor().class_names
    assert ["pizza", "steak", "sushi"] == mini_predictor().class_names  # the course's Mini app.py list


@pytest.mark.parametrize("demo", ["foodvision_mini", "foodvision_big"])
def test_demo_model_py_the_course_way(demo, offline):
    """The course's app.py: `from model import create_effnetb2_model` in the demo folder. Importing model.py
    imports no torch; calling it builds the course's model (offline: the one-line weights error)."""
    code = ("import sys, json\n"
            "from model import create_effnetb2_model, load_predictor\n"
            "imported = 'torch' in sys.modules\n"
            "try:\n"
            "    create_effnetb2_model(num_classes=3)\n"
            "    error = None\n"
            "except Exception as e:\n"
            "    error = f'{type(e).__name__}: {e}'\n"
            "called = 'torch' in sys.modules\n"
            "print(json.dumps({'torch_on_import': imported, 'torch_on_call': called, 'error': error}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "demos" / demo, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch_on_import"] is False and out["torch_on_call"] is True
    assert out["error"].startswith("WeightsUnavailableError: Could not download ImageNet weights")


def test_demo_model_py_in_the_space_says_why_it_cannot_build(tmp_path):
    """A packaged Space carries only the serving wing: importing model.py works, the course's builder there is an
    ImportError naming the training wing it lacks."""
    from demos import package

    space = package.build_space("foodvision_mini", tmp_path / "space")
    code = ("from model import create_effnetb2_model\n"
            "try:\n"
            "    create_effnetb2_model(num_classes=3)\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=space, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "No module named 'going_modular.model_builder'"


def test_pred_and_plot_image_from_the_courses_going_modular(trained, shared_data):
    """The course's going_modular/predictions.py, by keyword: pred_and_plot_image(model=, image_path=,
    class_names=, image_size=(224, 224)) with no transform (its default ImageNet transform)."""
    from going_modular.going_modular.predictions import pred_and_plot_image

    model, _, class_names = trained[:3]
    label, prob = pred_and_plot_image(model=model, image_path=shared_data / "custom_images" / "pizza-dad.jpeg",
                                      class_names=class_names, image_size=(224, 224))
    assert label in class_names and 1 / 3 < prob <= 1


def test_torchinfo_summary_the_course_way(trained):
    """Section 3.1's (commented-out) summary call: only the new head is trainable."""
    from torchinfo import summary

    stats = summary(trained[0], input_size=(1, 3, 224, 224), col_names=["input_size", "output_size", "num_params",
                    "trainable"], col_width=20, row_settings=["var_names"], verbose=0)
    assert stats.trainable_params == 1280 * 3 + 3
