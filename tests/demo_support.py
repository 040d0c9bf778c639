"""What the demo tests share: the inputs users really send (made from a real photo in a tmp dir)
and a real Gradio app running in a subprocess on a free 127.0.0.1 port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PSS_TEST = {"pizza": "pizza/2111981.jpg", "steak": "steak/3063435.jpg", "sushi": "sushi/2416569.jpg"}
# Real Food-101 photos of other dishes that FoodVision Mini's open-set score flags as something else.
NOT_PIZZA_STEAK_SUSHI = ("food101_mini/food-101/images/waffles/1497735.jpg",
                         "food101_mini/food-101/images/ramen/12611.jpg")


def proc_status_mb(pid: int | str, field: str) -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM, VmSize...) in MB; pid may be "self"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    """This environment without PYTHONPATH (the app must find going_modular by itself)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


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


class RunningApp:
    """A started app: its base `url`, `proc`, and `log()`: everything it printed (also after it stopped)."""

    def __init__(self, url: str, proc: subprocess.Popen, log_file):
        self.url, self.proc, self._log = url, proc, log_file
        self._final_log = None

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        self._log.seek(0)
        return self._log.read()

    def stopped(self) -> None:
        self._final_log = self.log()


@contextmanager
def running_app(args: list[str], cwd: Path = ROOT, env: dict | None = None, port: int | None = None,
                startup_timeout: float = 180, python: str = sys.executable):
    """Start `python <args>` (an app that serves on `port`), wait until its page answers, yield a
    RunningApp, then stop it with Ctrl-C (SIGINT) as a user would, and check it exited.
    `python` may be another environment's interpreter (a fresh venv)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([python, *args], cwd=cwd, env=env or clean_env(),
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        app = RunningApp(url, proc, log)
        try:
            deadline = time.monotonic() + startup_timeout  # generous: torch + gradio import on a busy machine
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"app did not start (exit code {proc.poll()}):\n{app.log()}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass  # not listening yet
                time.sleep(0.5)
            yield app
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired as err:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"app did not stop on Ctrl-C:\n{app.log()}") from err
            finally:
                app.stopped()
