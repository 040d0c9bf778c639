"""The demos' predict functions, called directly: real photos, every input users send, bad inputs,
low confidence, any class count, and start-up checks of the checkpoint against its class names."""
from __future__ import annotations

import gradio as gr
import pytest
from gradio.data_classes import ImageData
from PIL import Image

from demo_support import NOT_PIZZA_STEAK_SUSHI, PSS_TEST, bad_inputs, user_images
from going_modular import export
from going_modular.deploy import gradio_app
from going_modular.deploy.bundle import BUNDLE_FORMAT
from going_modular.model_builder import create_model


@pytest.fixture(scope="module")
def mini_app():
    from demos.foodvision_mini import app
    return app


@pytest.fixture(scope="module")
def big_app():
    from demos.foodvision_big import app
    return app


@pytest.fixture(scope="module")
def photo(shared_data):
    return shared_data / "custom_images" / "pizza-dad.jpeg"


@pytest.fixture(scope="module")
def uploads(photo, tmp_path_factory):
    return user_images(photo, tmp_path_factory.mktemp("uploads"))


def test_mini_predicts_real_test_images(mini_app, pss_dir):
    for cls, rel in PSS_TEST.items():
        probs, seconds, verdict = mini_app.predict(str(pss_dir / "test" / rel))
        assert list(probs) == sorted(probs, key=probs.get, reverse=True) and len(probs) == 3
        assert next(iter(probs)) == cls and probs[cls] > 0.95
        assert verdict.startswith(f"{cls} (") and seconds > 0


def test_mini_example_images_are_predicted_right(mini_app):
    for path in sorted((mini_app.HERE / "examples").iterdir()):
        probs, _, _ = mini_app.predict(str(path))
        assert next(iter(probs)) == path.stem


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png", "photo.webp", "grey.jpg", "rgba.png", "cmyk.jpg",
                                  "exif_rotated.jpg", "phone_6000x4000.jpg"])
def test_every_user_format_is_predicted_as_pizza(name, mini_app, uploads):
    probs, _, verdict = mini_app.predict(str(uploads[name]))
    assert next(iter(probs)) == "pizza", (name, probs)
    assert verdict.startswith("pizza (")


def test_tiny_image_gets_a_prediction(mini_app, uploads):
    probs, _, verdict = mini_app.predict(str(uploads["tiny.png"]))
    assert len(probs) == 3 and sum(probs.values()) == pytest.approx(1, abs=1e-4) and verdict


@pytest.mark.parametrize("case", ["no image", "text renamed .jpg", "empty file", "truncated JPEG"])
def test_bad_inputs_raise_a_clear_gradio_error(case, mini_app, photo, tmp_path):
    path, message = bad_inputs(photo, tmp_path)[case]
    with pytest.raises(gr.Error, match=message):
        mini_app.predict(None if path is None else str(path))


def test_unreadable_upload_reaches_predict_instead_of_failing_in_gradio(photo, tmp_path):
    """gr.Image's own preprocessing opens the file; ours passes a bad one on so predict can explain it."""
    image = gradio_app.image_input()
    for case in ("text renamed .jpg", "empty file", "truncated JPEG"):
        path, _ = bad_inputs(photo, tmp_path)[case]
        assert image.preprocess(ImageData(path=str(path), orig_name=path.name)) == str(path)
    assert image.preprocess(ImageData(path=str(photo), orig_name=photo.name)) == str(photo)
    with pytest.raises(gr.Error, match="not an image"):
        image.preprocess(ImageData(url="data:image/png;base64,bm90IGFuIGltYWdl"))


def test_other_dishes_are_reported_as_not_sure(mini_app, shared_data):
    for rel in NOT_PIZZA_STEAK_SUSHI:
        probs, _, verdict = mini_app.predict(str(shared_data / rel))
        assert max(probs.values()) < mini_app.THRESHOLD
        assert verdict.startswith("Not sure this is pizza, steak or sushi: best guess")


def test_big_predicts_top5_of_101_on_real_food101_images(big_app):
    assert len(big_app.predictor.class_names) == 101
    for path in sorted((big_app.HERE / "examples").iterdir()):
        probs, _, verdict = big_app.predict(str(path))
        assert len(probs) == 5 and next(iter(probs)) == path.stem and verdict.startswith(path.stem)


def test_big_says_not_sure_below_its_threshold(big_app):
    probs, _, verdict = big_app.predict(Image.new("RGB", (300, 200), "white"))  # no food at all
    assert max(probs.values()) < big_app.THRESHOLD
    assert verdict.startswith("Not sure this is one of the 101 foods this model knows")


@pytest.mark.parametrize("classes", [["hot_dog", "not_hot_dog"], [f"dish_{i}" for i in range(7)]])
def test_any_class_count_works(classes, tmp_path):
    model, transform = create_model("effnet_lite0", num_classes=len(classes), weights=None)
    bundle = export.export_onnx(model, tmp_path / "any.onnx", export.input_spec(transform))
    export.write_metadata(bundle, {"format": BUNDLE_FORMAT, "arch": "effnet_lite0", "class_names": classes,
                                   "precision": "fp32", "input": export.input_spec(transform)})
    names_file = tmp_path / "class_names.txt"
    names_file.write_text("\n".join(classes) + "\n")
    predictor = gradio_app.load_predictor(bundle, names_file)

    probs, _, verdict = gradio_app.classify(predictor, Image.new("RGB", (64, 64), "orange"), top_k=5, threshold=0.99)
    assert len(probs) == min(5, len(classes)) and set(probs) <= set(classes)
    assert verdict.startswith("Not sure this is")
    (tmp_path / "examples").mkdir()
    demo = gradio_app.build_demo(lambda image: gradio_app.classify(predictor, image, 5, 0.5), top_k=5,
                                 examples_dir=tmp_path / "examples", title="t", description="d", article="a")
    assert isinstance(demo, gr.Interface)


def test_class_names_that_do_not_match_the_checkpoint_stop_start_up(tmp_path):
    from demos.foodvision_big import model

    wrong = tmp_path / "class_names.txt"
    wrong.write_text("\n".join(model.CLASS_NAMES.read_text().split()[:100]))
    with pytest.raises(gradio_app.StartupError, match="class names do not match") as e:
        model.load_predictor(class_names_file=wrong)
    assert str(e.value).startswith("FoodVision demo cannot start:") and "100 names" in str(e.value)
    with pytest.raises(gradio_app.StartupError, match="model bundle not found"):
        model.load_predictor(bundle=tmp_path / "missing.onnx")


def test_unsure_message_lists_few_classes_and_counts_many():
    assert gradio_app.unsure_message(["pizza", "steak", "sushi"]) == "Not sure this is pizza, steak or sushi"
    assert gradio_app.unsure_message(["taco"]) == "Not sure this is taco"
    assert gradio_app.unsure_message([str(i) for i in range(101)]) == "Not sure this is one of the 101 foods this model knows"


def test_host_and_port_come_from_flags_or_gradio_env(monkeypatch):
    assert (gradio_app.parse_args([]).host, gradio_app.parse_args([]).port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    args = gradio_app.parse_args([])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 7999, False)
    args = gradio_app.parse_args(["--host", "127.0.0.1", "--port", "8001"])
    assert (args.host, args.port) == ("127.0.0.1", 8001)
