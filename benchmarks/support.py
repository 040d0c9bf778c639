"""What the benchmarks and the tests share to run the real thing: a free 127.0.0.1 port, a clean
environment, an app (the web service, a Gradio demo) started in a subprocess and stopped with
Ctrl-C, and /proc memory readings. Standard library only, and nothing of going_modular, so the
tests import it as they are (`from benchmarks.support import ...`) and nothing puts tests/ on sys.path."""
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
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def proc_status_mb(pid: int | str, field: str) -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM, VmSize...) in MB; pid may be "self"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    """This environment without PYTHONPATH (the app must find going_modular by itself)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


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


@contextmanager
def serve_in_subprocess(model: str | Path | None = None, args: tuple[str, ...] = (),
                        startup_timeout: float = 180, cwd: Path = ROOT, **env: str) -> Iterator[RunningApp]:
    """Yield the running server (`.url`, `.proc`, `.log()`); `model` defaults to the shipped Mini bundle;
    `cwd`: the checkout whose server runs (another one for before/after benchmarks);
    `env`: extra environment variables for the server."""
    port = free_port()
    model_args = ("--model", str(model)) if model else ()
    with running_app(["-m", "going_modular.deploy.serve", *model_args, "--log-level", "warning", *args,
                      "--port", str(port)], cwd=cwd, env=clean_env(**env), port=port,
                     startup_timeout=startup_timeout) as app:
        yield app


@contextmanager
def course_photo_folder(data: Path, quick: bool) -> Iterator[tuple[Path, int]]:
    """A temporary folder of symlinks to the real photos of the course dataset at `data` (extracted
    first if missing): its test split with `quick`, else train + test (600), in one flat folder as a
    batch job or a publisher reads it; yields (folder, number of photos)."""
    from going_modular.data_setup import COURSE_DATA_URL, download_data

    data_dir = download_data(COURSE_DATA_URL, data)
    splits = ("test",) if quick else ("train", "test")
    images = sorted(p for split in splits for p in (data_dir / split).glob("*/*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for image in images:
            os.symlink(image.resolve(), folder / f"{image.parents[1].name}_{image.parent.name}_{image.name}")
        yield folder, len(images)
