"""`python -m demos.package` builds a Hugging Face Space folder that runs on its own."""
from __future__ import annotations

import subprocess
import sys

import pytest
from demo_support import ROOT, clean_env, free_port, running_app
from gradio_client import Client, handle_file

from demos import package


def test_packaged_mini_space_runs_standalone(tmp_path, pss_dir):
    space = tmp_path / "dist" / "foodvision_mini"
    result = subprocess.run([sys.executable, "-m", "demos.package", "foodvision_mini", str(space)],
                            cwd=ROOT, capture_output=True, text=True, env=clean_env())
    assert result.returncode == 0, result.stderr
    for name in ("app.py", "model.py", "requirements.txt", "README.md", "foodvision_mini.int8.onnx",
                 "examples/pizza.jpg", "going_modular/deploy/gradio_app.py", "going_modular/deploy/predictor.py"):
        assert (space / name).is_file(), name
    # The serving wing only: no checkpoint, no training code, no torch in the requirements.
    assert not list(space.rglob("*.pth")) and not (space / "going_modular" / "train.py").exists()
    requirements = [line for line in (space / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [r for r in requirements if "torch" in r or "timm" in r], requirements
    assert (space / "README.md").read_text().startswith("---\ntitle: FoodVision Mini\n")
    assert "gradio==" in (space / "requirements.txt").read_text()
    assert not list(space.rglob("__pycache__")) and not list(space.rglob("*.pyi"))

    # Run from the Space folder with a clean PYTHONPATH: going_modular must be the bundled copy.
    where = subprocess.run([sys.executable, "-c", "import going_modular; print(going_modular.__file__)"],
                           cwd=space, capture_output=True, text=True, env=clean_env())
    assert where.stdout.strip() == str(space / "going_modular" / "__init__.py")
    port = free_port()
    with running_app(["app.py", "--port", str(port)], cwd=space, port=port) as app:
        label, *_ = Client(app.url, verbose=False).predict(handle_file(pss_dir / "test/steak/3063435.jpg"),
                                                             api_name="/predict")
        assert label["label"] == "steak"
    assert app.proc.returncode == 0 and "Traceback" not in app.log()


def test_packaged_big_space_with_wrong_class_names_fails_at_start_up_in_one_line(tmp_path):
    space = package.build_space("foodvision_big", tmp_path / "foodvision_big")
    names = (space / "class_names.txt").read_text().splitlines()
    (space / "class_names.txt").write_text("\n".join(names[:-1]) + "\n")  # one class short
    result = subprocess.run([sys.executable, "app.py"], cwd=space, capture_output=True, text=True,
                            env=clean_env(), timeout=300)
    assert result.returncode == 1
    assert "FoodVision demo cannot start" in result.stderr and "100 names" in result.stderr
    assert "Traceback" not in result.stderr


def test_package_refuses_unknown_demos_and_occupied_folders(tmp_path):
    with pytest.raises(package.PackageError, match="unknown demo 'foodvision_huge'"):
        package.build_space("foodvision_huge", tmp_path / "x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(package.PackageError, match="not empty"):
        package.build_space("foodvision_mini", occupied)
    assert [p.name for p in tmp_path.iterdir()] == ["occupied"]  # nothing half-built left behind
    result = subprocess.run([sys.executable, "-m", "demos.package", "nope", str(tmp_path / "y")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown demo 'nope'; choose one of")
