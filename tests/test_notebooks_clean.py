"""The committed notebooks: all there, in order, prose first, no errors, no local paths.

nbval executes them (`pytest --nbval-lax notebooks/`); these checks read the committed files."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# worked solutions to each lesson's exercises: the same hygiene, and nbval runs them too
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
EXPECTED = ["00_setup", "01_data", "02_effnetb2_feature_extractor", "03_vit_feature_extractor",
            "04_effnet_lite_feature_extractor", "05_timed_predictions", "06_model_comparison",
            "07_foodvision_mini_gradio", "08_foodvision_big", "09_deployment_modes", "10_monitoring"]
LOCAL_PATH = re.compile(r"(?<![\w.])/(work|root|home|tmp|Users)/")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _text(value):
    return "".join(value) if isinstance(value, list) else str(value)


def test_all_notebooks_in_order():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_committed_outputs_have_no_errors_or_local_paths(path):
    cells = _cells(path)
    assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "commit the notebook with outputs"
    for i, cell in enumerate(cells):
        assert not LOCAL_PATH.search(_text(cell["source"])), f"cell {i}: absolute local path in source"
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
            blob = _text(out.get("text", "")) + json.dumps(out.get("data", {}).get("text/plain", ""))
            assert not LOCAL_PATH.search(blob), f"cell {i}: absolute local path in output: {LOCAL_PATH.search(blob)}"
            assert "Traceback" not in blob, f"cell {i}: traceback in output"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_no_noisy_metadata_or_dead_widgets(path):
    """What nbconvert leaves behind that a reader can't use: timestamps, widget state, iframes to a dead server."""
    book = json.loads(path.read_text())
    assert "widgets" not in book["metadata"], "saved widget state: strip notebook metadata"
    for i, cell in enumerate(book["cells"]):
        assert "execution" not in cell.get("metadata", {}), f"cell {i}: execution timestamps in cell metadata"
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, f"cell {i}: progress-bar widget output"
            assert "<iframe" not in _text(data.get("text/html", "")), f"cell {i}: iframe to a server that is gone"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_prose_before_code(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and _text(cells[0]["source"]).startswith("# ")
    run = 0
    for cell in cells:
        run = run + 1 if cell["cell_type"] == "code" else 0
        assert run <= 3, "more than three code cells in a row without explanation"
    assert sum(c["cell_type"] == "markdown" for c in cells) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_notebooks_import_going_modular_instead_of_pasting_it(path):
    source = "\n".join(_text(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert "from going_modular import course" in source
    assert "def train_step" not in source and "class ImageFolder" not in source  # imported, not pasted


def _exercise_cells(cells):
    return [c for c in cells if "exercises" in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_lesson_ends_with_exercises_and_has_worked_solutions(path):
    """The tail cells tagged "exercises" (a markdown cell, maybe one starter code cell) are the last ones."""
    cells = _cells(path)
    tail = _exercise_cells(cells)
    assert tail and cells[-len(tail):] == tail, "the cells tagged exercises must be the notebook's last"
    assert tail[0]["cell_type"] == "markdown" and len(tail) <= 2
    text = _text(tail[0]["source"])
    assert text.startswith("## Exercises\n")
    items = re.findall(r"^(\d+)\. \*\*", text, flags=re.M)
    assert 2 <= len(items) <= 4 and items == [str(i) for i in range(1, len(items) + 1)], items
    solution = ROOT / "notebooks" / "solutions" / f"{path.stem}_solutions.ipynb"
    assert f"notebooks/solutions/{solution.name}" in text and solution.is_file()
    headings = [_text(c["source"]).split("\n")[0] for c in _cells(solution) if c["cell_type"] == "markdown"]
    assert [h.split(".")[0] for h in headings if h.startswith("## ")] == [f"## {i}" for i in items]


def test_fast_mode_is_read_from_the_environment():
    code = "from going_modular import course; print(course.FAST, course.EPOCHS, course.MAX_BATCHES)"
    outs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "FOODVISION_FAST": fast}).stdout.split() for fast in ("1", "0")]
    assert outs == [["True", "1", "2"], ["False", "10", "None"]]
