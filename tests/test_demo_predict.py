"""The demos' predict functions, called directly: real photos, every input users send, bad inputs,
photos that are none of the demo's foods, the page's words and numbers, and start-up checks of the
bundle against its class names."""
from __future__ import annotations

import json

import gradio as gr
import pytest
from demo_support import NOT_PIZZA_STEAK_SUSHI, PSS_TEST, bad_inputs, non_food_photo, user_images
from gradio.data_classes import ImageData
from PIL import Image

from going_modular import export
from going_modular.deploy import gradio_app
from going_modular.deploy.bundle import BUNDLE_FORMAT
from going_modular.model_builder import create_model

ICE_CREAM = "food101_101/food-101/images/ice_cream/1918103.jpg"  # a test photo FoodVision Big gets right
# A test photo of one of the 67 dishes food101_34 lacked (the previous Big never saw them), named right
NEW_DISH = "food101_101/food-101/images/cheese_plate/1400346.jpg"


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


def test_mini_predict_returns_the_courses_probabilities_and_seconds(mini_app, pss_dir):
    for cls, rel in PSS_TEST.items():
        probs, seconds = mini_app.predict(str(pss_dir / "test" / rel))
        assert list(probs) == sorted(probs, key=probs.get, reverse=True) and len(probs) == 3
        assert next(iter(probs)) == cls and probs[cls] > 0.95 and seconds > 0


def test_mini_example_images_are_predicted_right_and_known(mini_app):
    for path in sorted((mini_app.HERE / "examples").iterdir()):
        result = gradio_app.classify(mini_app.predictor, str(path), top_k=3)
        assert result["label"] == path.stem and result["known"] is True


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png", "photo.webp", "grey.jpg", "rgba.png", "cmyk.jpg",
                                  "exif_rotated.jpg", "phone_6000x4000.jpg"])
def test_every_user_format_is_predicted_as_pizza(name, mini_app, uploads):
    probs, _ = mini_app.predict(str(uploads[name]))
    assert next(iter(probs)) == "pizza", (name, probs)


def test_tiny_image_gets_a_prediction(mini_app, uploads):
    probs, _ = mini_app.predict(str(uploads["tiny.png"]))
    assert len(probs) == 3 and sum(probs.values()) == pytest.approx(1, abs=1e-4)


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


@pytest.mark.parametrize("source", ["astronaut", "chelsea", *NOT_PIZZA_STEAK_SUSHI])
def test_mini_says_other_dishes_and_non_food_are_something_else(source, mini_app, shared_data):
    image = non_food_photo(source) if "/" not in source else str(shared_data / source)
    result = gradio_app.classify(mini_app.predictor, image, top_k=3)
    assert result["known"] is False and result["ood_score"] > mini_app.predictor.ood_threshold
    _, _, verdict = gradio_app.present(result, mini_app.predictor.class_names, mini_app.THRESHOLD)
    assert verdict.startswith("Not pizza, steak or sushi — looks like something else (closest: ")


def test_page_shows_human_names_and_one_rounding(big_app, shared_data):
    result = gradio_app.classify(big_app.predictor, str(shared_data / ICE_CREAM), top_k=5)
    probs, seconds, verdict = gradio_app.present(result, big_app.predictor.class_names, big_app.THRESHOLD)
    assert next(iter(probs)) == "ice cream" and not any("_" in name for name in probs)
    assert verdict == f"ice cream ({gradio_app.percent(result['prob'])} confident)"
    assert seconds == f"{result['seconds']:.3f} s"
    # Whole percent, half up, as gr.Label draws its bars (Math.round): never "100%" beside "99.9%".
    assert [gradio_app.percent(p) for p in (0.9995, 0.994, 0.125, 0.5)] == ["100%", "99%", "13%", "50%"]


def test_big_knows_all_101_food101_dishes_in_the_datasets_order(big_app, shared_data):
    food101 = (shared_data / "food101_101/food-101/meta/classes.txt").read_text().split()
    assert food101 == (shared_data / "food101_classes.txt").read_text().split() and len(food101) == 101
    assert big_app.predictor.class_names == food101
    assert set(json.loads((shared_data / "food101_101/food-101/meta/train.json").read_text())) == set(food101)
    for path in sorted((big_app.HERE / "examples").iterdir()):
        probs, _ = big_app.predict(str(path))
        assert next(iter(probs)) == path.stem and set(probs) == set(food101)  # the course's dict: every class
    assert big_app.predictor.meta["metrics"]["test_images"] == 1390  # every test photo of the 101 dishes


def test_big_names_a_dish_the_34_class_model_never_knew(big_app, shared_data):
    dish = NEW_DISH.split("/")[3]
    assert dish not in json.loads((shared_data / "food101_34/food-101/meta/train.json").read_text())
    assert NEW_DISH.split("food-101/images/")[1].removesuffix(".jpg") in \
        json.loads((shared_data / "food101_101/food-101/meta/test.json").read_text())[dish]  # a test photo
    result = gradio_app.classify(big_app.predictor, str(shared_data / NEW_DISH), top_k=5)
    assert result["label"] == dish and result["known"] is True


def test_big_says_how_many_foods_it_knows(big_app):
    result = gradio_app.classify(big_app.predictor, non_food_photo("astronaut"), top_k=5)
    _, _, verdict = gradio_app.present(result, big_app.predictor.class_names, big_app.THRESHOLD)
    assert verdict.startswith("Not one of the 101 foods this model knows — looks like something else")
    page = big_app.demo.config["components"]
    texts = " ".join(str(c["props"].get("value", "")) for c in page if c["type"] == "markdown")
    assert "101" in texts and "34" not in texts


def test_another_class_count_works_also_without_an_open_set_score(tmp_path, pss_dir):
    classes = ["hot_dog", "not_hot_dog"]  # (one export: 8 s; the texts for many classes are tested above)
    model, transform = create_model("effnet_lite0", num_classes=len(classes), weights=None)
    bundle = export.export_onnx(model, tmp_path / "any.onnx", export.input_spec(transform))
    export.write_metadata(bundle, {"format": BUNDLE_FORMAT, "arch": "effnet_lite0", "class_names": classes,
                                   "precision": "fp32", "input": export.input_spec(transform)})
    names_file = tmp_path / "class_names.txt"
    names_file.write_text("\n".join(classes) + "\n")
    predictor = gradio_app.startup_predictor(bundle, names_file)

    result = gradio_app.classify(predictor, Image.new("RGB", (64, 64), "orange"), top_k=5)
    assert result["known"] is None and result["ood_score"] is None  # an older bundle: no open-set score
    probs, _, verdict = gradio_app.present(result, classes, threshold=0.99)
    assert len(probs) == min(5, len(classes)) and set(probs) <= {gradio_app.human(c) for c in classes}
    assert verdict.startswith("Not sure this is")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "pizza.jpg").write_bytes((pss_dir / "test" / PSS_TEST["pizza"]).read_bytes())
    demo = gradio_app.build_demo(predictor, top_k=5, threshold=0.5, examples_dir=tmp_path / "examples",
                                 title="t", description="d", article="a")
    assert isinstance(demo, gr.Blocks) and demo.delete_cache == gradio_app.DELETE_CACHE


def test_menu_lists_few_classes_and_counts_many():
    assert gradio_app.menu(["pizza", "steak", "sushi"]) == "pizza, steak or sushi"
    assert gradio_app.menu(["ice_cream"]) == "ice cream"
    assert gradio_app.menu([str(i) for i in range(34)]) == "one of the 34 foods this model knows"


def test_class_names_that_do_not_match_the_bundle_stop_start_up(tmp_path, shared_data):
    from demos.foodvision_big import model

    wrong = tmp_path / "class_names.txt"
    wrong.write_text("\n".join(model.CLASS_NAMES.read_text().split()[:33]))
    with pytest.raises(gradio_app.StartupError, match="class names do not match") as e:
        model.load_predictor(class_names_file=wrong)
    assert str(e.value).startswith("FoodVision demo cannot start:") and "33 names" in str(e.value)
    # the previous Big's class_names.txt (its 34 dishes) beside the 101-way bundle: one line, both counts
    wrong.write_text("\n".join(sorted(json.loads((shared_data / "food101_34/food-101/meta/train.json").read_text()))))
    with pytest.raises(gradio_app.StartupError, match="got 34 names .* the bundle has 101") as e:
        model.load_predictor(class_names_file=wrong)
    assert "\n" not in str(e.value)
    with pytest.raises(gradio_app.StartupError, match="not found"):
        model.load_predictor(bundle=tmp_path / "missing.onnx")


def test_host_and_port_come_from_flags_or_gradio_env(monkeypatch):
    args = gradio_app.get_args_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    args = gradio_app.get_args_parser().parse_args([])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 7999, False)
    args = gradio_app.get_args_parser().parse_args(["--host", "127.0.0.1", "--port", "8001"])
    assert (args.host, args.port) == ("127.0.0.1", 8001)
