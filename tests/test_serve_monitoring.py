"""Monitoring of the web service on a real server: /metrics counts what was served (N photos in,
N predictions counted, every worker's counts added up), every answer names its model and request,
the prediction log gets one record per prediction, and a log that cannot be written costs nothing
but the log (serving goes on, /health/ready says so)."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from server_support import serve_in_subprocess

from going_modular.deploy.monitor.log import read_log

CLASSES = ("pizza", "steak", "sushi")


@pytest.fixture(scope="module")
def photos(pss_dir) -> list[tuple[str, bytes]]:
    """(true class, JPEG bytes): 3 real test photos per class."""
    return [(cls, p.read_bytes()) for cls in CLASSES for p in sorted((pss_dir / "test" / cls).glob("*.jpg"))[:3]]


def metric_values(text: str, name: str) -> dict[str, float]:
    """{labels text: value} of one metric's samples in a Prometheus text page."""
    values = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if m:
            values[m.group(1) or ""] = float(m.group(2))
    return values


def send(client: httpx.Client, photos) -> tuple[list[dict], dict]:
    """The first photos one by one to /predict, the rest in one /predict/batch."""
    singles = [client.post("/predict", files={"file": ("a.jpg", data, "image/jpeg")}) for _, data in photos[:5]]
    batch = client.post("/predict/batch", files=[("files", (f"{i}.jpg", d, "image/jpeg"))
                                                  for i, (_, d) in enumerate(photos[5:])])
    assert all(r.status_code == 200 for r in singles) and batch.status_code == 200
    for r in singles:
        assert r.headers["x-request-id"] == r.json()["request_id"]
    assert batch.headers["x-request-id"] == batch.json()["request_id"]
    return [r.json() for r in singles], batch.json()


def check_counts(text: str, n_single: int, n_batch: int, batch_requests: int = 1) -> None:
    predictions = metric_values(text, "foodvision_predictions_total")
    assert sum(predictions.values()) == n_single + n_batch
    assert all('known="' in k and 'label="' in k for k in predictions)
    requests = metric_values(text, "foodvision_requests_total")
    assert requests['{endpoint="/predict",status="200"}'] == n_single
    assert requests['{endpoint="/predict/batch",status="200"}'] == batch_requests
    batch_sizes = metric_values(text, "foodvision_batch_size_count")
    assert batch_sizes[""] >= 1  # forward passes (the warm-up of each worker included)
    assert metric_values(text, "foodvision_request_seconds_count")['{endpoint="/predict"}'] == n_single
    assert metric_values(text, "foodvision_rejected_total") == {'{reason="capacity"}': 0.0,
                                                                '{reason="deadline"}': 0.0}
    info = metric_values(text, "foodvision_model_info")
    assert len(info) == 1 and list(info.values()) == [1.0]


def test_metrics_count_each_photo_and_answers_name_model_and_request(photos, tmp_path):
    log_path = tmp_path / "predictions.jsonl"
    with serve_in_subprocess(args=("--prediction-log", str(log_path))) as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:
        ready = client.get("/health/ready").json()
        model_id, precision = ready["model_id"], ready["precision"]
        assert re.fullmatch(r"[0-9a-f]{12,}", model_id) and precision in ("int8", "fp32")
        assert ready["prediction_log"]["ok"] and ready["prediction_log"]["path"] == str(log_path)
        singles, batch = send(client, photos)
        for answer, (cls, _) in zip(singles + batch["results"], photos, strict=True):
            assert answer["model_id"] == model_id and answer["precision"] == precision
            assert answer["label"] == cls  # real photos, the real model
        text = client.get("/metrics").text
        check_counts(text, len(singles), len(batch["results"]))
        assert f'model_id="{model_id}"' in text
        assert metric_values(text, "foodvision_queue_depth") == {"": 0.0}  # nothing in progress now
    records = read_log(log_path).records  # the server drained its log at shutdown
    assert len(records) == len(photos)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted([a["request_id"] for a in singles]
                                 + [f"{batch['request_id']}/{i}" for i in range(len(batch["results"]))])
    assert all(r["mode"] == "web" and r["model_id"] == model_id and r["precision"] == precision for r in records)
    assert all(r["width"] > 0 and r["format"] == "JPEG" and 0 < r["brightness"] < 255 for r in records)


def test_two_workers_add_up_and_share_one_log(photos, tmp_path):
    log_path = tmp_path / "predictions.jsonl"
    with serve_in_subprocess(args=("--workers", "2", "--prediction-log", str(log_path))) as server:
        pids, rounds, deadline = set(), 0, time.monotonic() + 180
        # Each new connection lands on either worker, as the kernel picks (one worker can win many accepts
        # in a row: 20 rounds once all went to one); keep sending until both have served photos.
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                send(client, photos)
                pids.add(client.get("/health/ready").json()["pid"])
            rounds += 1
        assert len(pids) == 2, "the kernel gave every connection to one worker"
        with httpx.Client(base_url=server.url, timeout=120) as client:
            text = client.get("/metrics").text
        check_counts(text, 5 * rounds, (len(photos) - 5) * rounds, batch_requests=rounds)
    records = read_log(log_path).records  # both workers drained their log into the one file
    assert len(records) == len(photos) * rounds and len({r["id"] for r in records}) == len(records)


def test_unwritable_log_keeps_serving_and_readiness_says_so(photos, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    with serve_in_subprocess(args=("--prediction-log", str(blocker / "predictions.jsonl"))) as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:
        singles, batch = send(client, photos)
        assert [a["label"] for a in singles + batch["results"]] == [cls for cls, _ in photos]
        for _ in range(100):  # the writer thread flushes within half a second
            status = client.get("/health/ready").json()["prediction_log"]
            if not status["ok"]:
                break
            time.sleep(0.1)
        assert status["ok"] is False and status["written"] == 0 and status["failed"] == len(photos)
        assert "not-a-folder" in status["last_error"]
        assert client.post("/predict", files={"file": ("a.jpg", photos[0][1], "image/jpeg")}).status_code == 200


def test_metrics_off(photos):
    with serve_in_subprocess(args=("--no-metrics",)) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/metrics").status_code == 404
        answer = client.post("/predict", files={"file": ("a.jpg", photos[0][1], "image/jpeg")}).json()
        assert answer["model_id"] and answer["request_id"]
        assert client.get("/health/ready").json()["prediction_log"] is None


def metrics_folder(pid: int) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR a server process uses: where its mapped metric files lie."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    folders = {Path(line.split()[-1]).parent for line in maps if line.endswith(".db") and "foodvision-metrics-" in line}
    assert len(folders) == 1, maps
    return folders.pop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_metrics_folder_is_removed_when_the_server_stops(photos, signum):
    with serve_in_subprocess() as server, httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.post("/predict", files={"file": ("a.jpg", photos[0][1], "image/jpeg")}).status_code == 200
        folder = metrics_folder(server.proc.pid)
        assert any(folder.glob("counter_*.db"))
        server.proc.send_signal(signum)
        server.proc.wait(timeout=60)
    assert not folder.exists()


def test_a_killed_worker_is_marked_dead_and_its_counts_are_kept(photos):
    """SIGKILL one of two workers: uvicorn starts another, the supervisor marks the dead one (its
    live gauge file goes), and what it counted still adds up in /metrics."""
    with serve_in_subprocess(args=("--workers", "2")) as server:
        sent = 0
        workers = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
        folder = metrics_folder(workers[-1])
        while not all((folder / f"counter_{pid}.db").exists() for pid in workers[-2:]) and sent < 60:
            with httpx.Client(base_url=server.url, timeout=120) as client:  # a new connection: either worker
                assert client.post("/predict", files={"file": ("a.jpg", photos[0][1], "image/jpeg")}).status_code == 200
            sent += 1
        victim = next(pid for pid in workers[-2:] if (folder / f"counter_{pid}.db").exists())
        assert (folder / f"gauge_livesum_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (folder / f"gauge_livesum_{victim}.db").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (folder / f"gauge_livesum_{victim}.db").exists()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            text = client.get("/metrics").text
        assert sum(metric_values(text, "foodvision_predictions_total").values()) == sent
