"""The packaged Space installs and runs from its own requirements.txt alone, in a fresh venv,
as Hugging Face Spaces would run it: no torch, no torchvision, no timm, no repository."""
from __future__ import annotations

import subprocess
import sys

import pytest
from demo_support import free_port, running_app
from gradio_client import Client, handle_file

from demos import package


@pytest.mark.slow
def test_space_installs_and_serves_in_a_fresh_venv(tmp_path, pss_dir):
    space = package.build_space("foodvision_mini", tmp_path / "space")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(space / "requirements.txt")],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert {"gradio", "onnxruntime"} <= names and not names & {"torch", "torchvision", "timm"}
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    print(f"Space venv: {size_mb:.0f} MB")

    port = free_port()
    with running_app(["app.py", "--port", str(port)], cwd=space, port=port, python=python) as app:
        result = Client(app.url, verbose=False).predict(handle_file(pss_dir / "test/sushi/2416569.jpg"),
                                                        api_name="/predict")
        assert result[0]["label"] == "sushi"
    assert "Traceback" not in app.log()
