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
    out = _run("benchmarks.latency", shared_data)
    rows = [line for line in out.splitlines() if line.startswith("| effnet_lite0 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["eager", "onnx", "onnx-int8"]
    for row in rows:
        agree = float(row.split("|")[-3])
        assert agree >= 0.99, row  # every runtime gives eager's top-1
    assert "fastest" in out and (ROOT / "benchmarks" / "results" / "latency.csv").is_file()


def test_train_cache_quick(shared_data):
    out = _run("benchmarks.train_cache", shared_data)
    assert "| effnet_lite0 | False | 2 |" in out and "| effnet_lite0 | True | 2 |" in out
    assert "feature caching speed-up:" in out
