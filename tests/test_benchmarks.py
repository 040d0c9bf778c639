"""The benchmark scripts run (reduced mode) and print their tables; timings are never asserted."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(module, shared_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FOODVISION_DATA_MIRROR": str(shared_data)}
    proc = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_latency_quick(shared_data):
    """Eager vs the shipped int8 bundle (2 and 1 threads), side by side, agreeing on top-1."""
    out = _run("benchmarks.latency", shared_data)
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| lite0 ")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("lite0 eager", "2"), ("lite0 int8 bundle", "2"), ("lite0 int8 bundle", "1")]
    for row in rows:
        assert float(row[-2]) >= 0.96 and float(row[-3]) >= 0.9, row  # top-1 agreement, accuracy (30 photos)
    assert "shipped int8 bundle:" in out and (ROOT / "benchmarks" / "results" / "latency-quick.csv").is_file()


def test_train_cache_quick(shared_data):
    out = _run("benchmarks.train_cache", shared_data)
    assert "| effnet_lite0 | False | 2 |" in out and "| effnet_lite0 | True | 2 |" in out
    assert "feature caching speed-up:" in out


def test_memory_format_quick(shared_data):
    """Both layouts timed for every registered architecture, with the layout create_model picks."""
    from going_modular.model_builder import REGISTRY

    out = _run("benchmarks.memory_format", shared_data)
    rows = {line.split("|")[1].strip(): line.split("|")[5].strip() for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| arch")}
    assert rows == {name: "channels_last" if arch.channels_last else "NCHW" for name, arch in REGISTRY.items()}


def test_drift_quick(shared_data):
    """The drift benchmark logs real photos through the serving path and checks windows of them."""
    out = _run("benchmarks.drift", shared_data)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| traffic")}
    assert list(rows) == ["test split (in distribution)", "menu_calibration (in distribution)",
                          "other dishes (31, original size)", "other dishes (67, resized 256 px)", "non-food photos",
                          "darkened x0.5", "rotated 90°", "rotated 180°"]
    assert rows["non-food photos"][3] == "100.0%" and rows["darkened x0.5"][3] == "100.0%"  # detection rate
    assert (ROOT / "benchmarks" / "results" / "drift" / "reference.json").is_file()


def test_big_recipe_quick(shared_data):
    """Two recipes trained by the CLI on a shared feature cache, then the best one's int8 bundle measured."""
    out = _run("benchmarks.big_recipe", shared_data)
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith("| effnet_lite0 ") and "(reference" not in line]
    assert "| (reference: the shipped FoodVision Mini bundle) |" in out  # the timing yardstick
    assert [(r[1], r[2], r[3]) for r in rows] == [("0.0000", "True", "center"), ("0.1000", "True", "center")]
    measured = [r for r in rows if r[9]]  # the bundle's columns, on the best recipe's row only
    assert len(measured) == 1 and float(measured[0][9]) > 0 and 2 < float(measured[0][10]) < 15
    assert all(0 <= float(r[5]) <= float(r[6]) <= 1 for r in rows)  # top-1 <= top-5
