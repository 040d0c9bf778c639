"""`pip install .` (not editable) carries the whole package: both wings, every mode of the serving wing."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module(tmp_path):
    # setuptools builds in the source tree (build/, *.egg-info): build a copy, never the checkout itself
    src = tmp_path / "src"
    shutil.copytree(ROOT / "going_modular", src / "going_modular", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "helper_functions.py"):
        shutil.copy(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("foodvision-*.whl")
    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "going_modular").rglob("*.py")}
    assert expected - packed == set(), "modules a plain `pip install .` would leave out"
    assert "helper_functions.py" in packed
    assert "going_modular/deploy/web/app.py" in packed  # the serving wing's modes, not only its core
