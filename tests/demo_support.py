"""What the demo tests share: the inputs users really send (made from a real photo in a tmp dir)
and a real Gradio app running in a subprocess on a free 127.0.0.1 port."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from benchmarks.support import ROOT, RunningApp, clean_env, free_port, proc_status_mb, running_app  # noqa: F401

PSS_TEST = {"pizza": "pizza/2111981.jpg", "steak": "steak/3063435.jpg", "sushi": "sushi/2416569.jpg"}
# Real Food-101 photos of other dishes that FoodVision Mini's open-set score flags as something else.
NOT_PIZZA_STEAK_SUSHI = ("food101_mini/food-101/images/waffles/1497735.jpg",
                         "food101_mini/food-101/images/ramen/12611.jpg")


def non_food_photo(name: str) -> Image.Image:
    """A real photo that is not food, shipped with scikit-image (skimage.data.astronaut, .chelsea...)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def user_images(photo: Path, out: Path) -> dict[str, Path]:
    """The formats and shapes users upload, each made from the real `photo` (all still show its food)."""
    out.mkdir(parents=True, exist_ok=True)
    src = Image.open(photo).convert("RGB")
    small = src.copy()
    small.thumbnail((640, 640))
    paths = {name: out / name for name in ("photo.jpg", "photo.png", "photo.webp", "grey.jpg", "rgba.png",
                                             "cmyk.jpg", "exif_rotated.jpg", "phone_6000x4000.jpg", "tiny.png")}
    small.save(paths["photo.jpg"], quality=90)
    small.save(paths["photo.png"])
    small.save(paths["photo.webp"])
    small.convert("L").save(paths["grey.jpg"])
    rgba = small.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(paths["rgba.png"])
    small.convert("CMYK").save(paths["cmyk.jpg"])
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was held sideways: pixels stored rotated, viewers turn them back
    small.transpose(Image.Transpose.ROTATE_90).save(paths["exif_rotated.jpg"], exif=exif)
    src.resize((6000, 4000)).save(paths["phone_6000x4000.jpg"], quality=85)
    src.resize((8, 8)).save(paths["tiny.png"])
    return paths


def bad_inputs(photo: Path, out: Path) -> dict[str, tuple[Path | None, str]]:
    """name -> (file or None, a phrase the user-facing error message must contain)."""
    out.mkdir(parents=True, exist_ok=True)
    renamed = out / "shopping_list.jpg"
    renamed.write_text("pizza, steak, sushi\n")
    empty = out / "empty.jpg"
    empty.write_bytes(b"")
    data = photo.read_bytes()
    truncated = out / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    return {"no image": (None, "No image provided"),
            "text renamed .jpg": (renamed, "not an image we can read"),
            "empty file": (empty, "not an image we can read"),
            "truncated JPEG": (truncated, "damaged or truncated")}


# Runs a script as `python app.py` would, but reports every socket it opens (Python audit events),
# so a test can prove start-up and serving never reach beyond 127.0.0.1.
NETWORK_AUDIT = """
import runpy, sys
def audit(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):
        print(f"[socket.connect] {args[1][0]}", file=sys.stderr, flush=True)
    elif event == "socket.getaddrinfo":
        print(f"[socket.getaddrinfo] {args[0]}", file=sys.stderr, flush=True)
sys.addaudithook(audit)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, script.rpartition("/")[0])
runpy.run_path(script, run_name="__main__")
"""


