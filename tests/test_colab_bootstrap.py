"""Colab-ready notebooks: every notebook starts with the bootstrap cell kept in notebooks/bootstrap.py,
the repository's address lives there only, and a notebook copied alone into an empty folder (what
Colab opens) clones the repository and runs.

The run test clones the committed HEAD of this checkout (`FOODVISION_REPO=file://...`): in CI, a
fresh clone, that is the code under test; locally, commit first."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, unavailable
from demo_support import clean_env

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _load_bootstrap(path: Path = ROOT / "notebooks" / "bootstrap.py"):
    spec = importlib.util.spec_from_file_location("notebook_bootstrap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bootstrap = _load_bootstrap()


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_bootstrap_cell_and_a_colab_badge(path):
    cells = _cells(path)
    first = bootstrap.first_code_cell(cells)
    assert _text(cells[first]) == bootstrap.cell_source(), "run `python notebooks/bootstrap.py`"
    assert _text(cells[first - 1]) == bootstrap.PROSE
    title = _text(cells[0]).split("\n")
    assert title[0].startswith("# ") and title[2] == bootstrap.badge(path.name)
    assert bootstrap.colab_url(path.name).endswith(f"/blob/main/notebooks/{path.name}")


def test_readme_links_every_notebook_to_colab_without_placeholders():
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert bootstrap.colab_url(path.name) in readme, f"README: no Colab link for {path.name}"
    assert bootstrap.REPO_URL in readme and "notebooks/bootstrap.py" in readme
    for text in [readme, *(p.read_text() for p in NOTEBOOKS)]:
        assert "<this repo" not in text


def test_the_address_lives_in_one_place(tmp_path, monkeypatch):
    """Changing REPO_URL and running the sync moves every notebook, badge and README link with it."""
    (tmp_path / "notebooks").mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "notebooks" / path.name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    monkeypatch.setattr(bootstrap, "REPO_URL", "https://github.com/someone-else/fv")
    monkeypatch.setattr(bootstrap, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(bootstrap, "README", tmp_path / "README.md")
    originals = {p: p.read_text() for p in [*NOTEBOOKS, ROOT / "README.md"]}
    assert bootstrap.main() == 0
    assert all(p.read_text() == text for p, text in originals.items()), "the sync touched the real files"
    copies = [*sorted((tmp_path / "notebooks").glob("*.ipynb")), tmp_path / "README.md"]
    for path in copies:
        text = path.read_text()
        assert "foodvision-course" not in text, f"{path.name} still names the old address"
        assert "github.com/someone-else/fv" in text
    for path in copies[:-1]:
        cells = _cells(path)
        assert '"https://github.com/someone-else/fv")' in _text(cells[bootstrap.first_code_cell(cells)])
    readme = copies[-1].read_text()
    assert "colab.research.google.com/github/someone-else/fv/blob/main/notebooks/00_setup.ipynb" in readme
    before = [p.read_text() for p in copies]
    bootstrap.main()  # a second run changes nothing
    assert [p.read_text() for p in copies] == before


def test_install_missing_installs_nothing_in_the_course_environment(tmp_path):
    assert bootstrap.install_missing() == []
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# a comment\ntimm==1.0.31\nray[data]==2.60.0\n")
    assert bootstrap.requirements(["timm", "ray[data]", "not-pinned"], requirements) == [
        "timm==1.0.31", "ray[data]==2.60.0", "not-pinned"]
    # every package the cell may install is pinned in the real requirements.txt
    pins = bootstrap.requirements(sorted(set(bootstrap.PACKAGES.values())))
    assert all("==" in pin for pin in pins), pins


def test_a_notebook_alone_clones_the_repository_and_runs(tmp_path, shared_data):
    """00 and 01 copied into an empty folder, as Colab opens them: the first clones the repository
    into foodvision/ (from $FOODVISION_REPO), the second finds that clone; both pass under nbval."""
    if shutil.which("git") is None:
        unavailable("git is not installed")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        unavailable(f"{ROOT} is not a git checkout: nothing to clone")
    if "notebooks/bootstrap.py" not in subprocess.run(["git", "ls-files", "notebooks"], cwd=ROOT,
                                                      capture_output=True, text=True).stdout:
        unavailable("notebooks/bootstrap.py is not committed yet: the clone would not have it")
    work = tmp_path / "content"
    work.mkdir()
    for name in ("00_setup.ipynb", "01_data.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, work / name)
    env = clean_env(FOODVISION_REPO=ROOT.as_uri(), FOODVISION_FAST="1", FOODVISION_DATA_MIRROR=str(shared_data))
    env.pop("FOODVISION_DEVICE", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                             "00_setup.ipynb", "01_data.ipynb"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    clone = work / "foodvision"
    assert (clone / "going_modular").is_dir() and not (clone / "foodvision").exists()
    cloned = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
    assert cloned == head.stdout  # the committed code, not this working tree
    assert (clone / "data" / "pizza_steak_sushi_20_percent" / "test").is_dir()  # 01 ran inside the clone
    assert sorted(p.name for p in work.iterdir()) == ["00_setup.ipynb", "01_data.ipynb", "foodvision"]
