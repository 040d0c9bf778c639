"""load_image and predict on real photos and on every kind of input users really send."""
import io

import numpy as np
import pytest
from PIL import Image

from going_modular.deploy import image
from going_modular.deploy.image import InvalidImageError, load_image
from going_modular.predictions import pred_and_store, predict
from going_modular.utils import load_model


@pytest.fixture(scope="module")
def mini(mini_checkpoint):
    model, transform, ckpt = load_model(mini_checkpoint)
    return model, transform, ckpt["class_names"]


@pytest.fixture(scope="module")
def photo(shared_data):
    return Image.open(shared_data / "custom_images" / "pizza-dad.jpeg")


def test_real_phone_photo_is_pizza(mini, shared_data):
    probs, seconds = predict(shared_data / "custom_images" / "pizza-dad.jpeg", *mini)
    assert max(probs, key=probs.get) == "pizza" and probs["pizza"] > 0.8
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5) and seconds > 0


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"),
                                      ("LA", "PNG"), ("RGB", "WEBP"), ("RGB", "PNG"), ("1", "PNG")])
def test_modes_and_formats_become_rgb_and_keep_the_label(mode, fmt, photo, mini):
    small = photo.convert("RGB").resize((400, 300))
    data = _encode(small.convert(mode), fmt)
    img = load_image(data)
    assert img.mode == "RGB" and img.size == (400, 300)
    if mode not in ("1",):  # 1-bit loses too much to expect the label
        probs, _ = predict(data, *mini)
        assert max(probs, key=probs.get) == "pizza"


def test_sixteen_bit_png_is_scaled_not_clipped(photo):
    grey = np.asarray(photo.convert("L").resize((64, 48)), dtype=np.uint16) * 257  # full 16-bit range
    data = _encode(Image.fromarray(grey), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = np.asarray(load_image(data))
    assert 40 < img.mean() < 215, "16-bit image clipped to white/black"
    assert np.abs(img[..., 0].astype(int) - (grey // 257)).max() <= 1


def test_rgba_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((5, 5)) == (255, 255, 255)


def test_exif_rotation_is_applied(photo):
    img = photo.convert("RGB").resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: rotate 90 degrees when displaying
    out = load_image(_encode(img, "JPEG", exif=exif))
    assert out.size == (200, 300)


def test_tiny_and_huge_images(mini, tmp_path):
    assert load_image(Image.new("RGB", (1, 1), "red")).size == (1, 1)
    probs, _ = predict(Image.new("RGB", (1, 1), "red"), *mini)
    assert len(probs) == 3
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (10000, 10000), (200, 120, 60)).save(huge, quality=50)
    img = load_image(huge)  # draft-decoded: far fewer pixels, same aspect ratio
    assert img.size[0] == img.size[1] and 512 <= img.size[0] < 10000
    probs, _ = predict(huge, *mini)
    assert len(probs) == 3


def test_too_many_pixels_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(image, "MAX_PIXELS", 1000)
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(path)


def test_pil_decompression_bomb_is_reported_as_too_large(monkeypatch, tmp_path):
    """Past twice PIL's own limit, PIL refuses inside Image.open: the user still hears 'too large'."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 40)).save(path)
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(path)


@pytest.mark.parametrize("bad,message", [
    (None, "No image provided"),
    (b"", "empty"),
    (b"%PDF-1.4 this is a pdf renamed to .jpg", "not an image"),
    ("/definitely/not/here.jpg", "not found"),
    (np.zeros((0, 3)), "Expected an HxW"),
])
def test_bad_inputs_have_clear_messages(bad, message):
    with pytest.raises(InvalidImageError, match=message):
        load_image(bad)


def test_truncated_and_renamed_files(photo, tmp_path):
    data = _encode(photo.convert("RGB"), "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidImageError, match="damaged or truncated"):
        load_image(truncated)
    renamed = tmp_path / "notes.jpg"
    renamed.write_text("shopping list: pizza, steak, sushi")
    with pytest.raises(InvalidImageError, match="not an image"):
        load_image(renamed)


def test_pred_and_store_on_real_test_images(mini, pss_dir):
    paths = sorted((pss_dir / "test").glob("*/*.jpg"))[::15]  # 10 real images across the classes
    rows = pred_and_store(paths, *mini)
    assert len(rows) == 10
    assert {r["class_name"] for r in rows} == {"pizza", "steak", "sushi"}
    assert sum(r["correct"] for r in rows) >= 9
    assert all(0 < r["pred_prob"] <= 1 and r["time_for_pred"] > 0 for r in rows)
