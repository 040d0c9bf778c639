"""Web service end to end: a real uvicorn server in a subprocess on 127.0.0.1, real images, real HTTP."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
import pytest

from going_modular.deploy.serve import serve_in_subprocess

CLASSES = ("pizza", "steak", "sushi")
IMAGES_PER_CLASS = 2


@pytest.fixture(scope="module")
def server(mini_checkpoint):
    """Base URL of `python -m going_modular.deploy.serve` running on a free port (stopped after the module)."""
    with serve_in_subprocess(mini_checkpoint) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def labelled_images(pss_dir) -> list[tuple[str, bytes]]:
    """(true class, JPEG bytes) for the first real test images of each class."""
    return [(cls, p.read_bytes()) for cls in CLASSES
            for p in sorted((pss_dir / "test" / cls).glob("*.jpg"))[:IMAGES_PER_CLASS]]


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["classes"] == list(CLASSES) and body["model"] == "effnet_lite0"


def test_openapi_schema_documents_endpoints(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health"} <= set(schema["paths"])
    content = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(content)


def test_multipart_and_raw_uploads_predict_true_class(client, labelled_images):
    for cls, data in labelled_images:
        multipart = client.post("/predict", files={"file": ("photo.jpg", data, "image/jpeg")})
        raw = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
        assert multipart.status_code == raw.status_code == 200
        assert multipart.json()["label"] == raw.json()["label"] == cls
        body = raw.json()
        assert set(body) == {"label", "prob", "probs", "seconds"}
        assert list(body["probs"]) == sorted(body["probs"], key=body["probs"].get, reverse=True)
        assert body["prob"] == body["probs"][cls] and sum(body["probs"].values()) == pytest.approx(1, abs=1e-4)


def test_top_k(client, labelled_images):
    body = client.post("/predict?top_k=1", content=labelled_images[0][1]).json()
    assert list(body["probs"]) == [body["label"]]


def test_50_concurrent_requests_all_correct_and_health_stays_responsive(server, labelled_images):
    jobs = [labelled_images[i % len(labelled_images)] for i in range(50)]
    finished = []  # (kind, monotonic time) in completion order
    with httpx.Client(base_url=server, timeout=300, limits=httpx.Limits(max_connections=60)) as c, \
            ThreadPoolExecutor(max_workers=50) as pool:
        def predict(cls_data):
            cls, data = cls_data
            r = c.post("/predict", files={"file": ("photo.jpg", data, "image/jpeg")})
            finished.append(("predict", time.monotonic()))
            return cls, r

        futures = [pool.submit(predict, job) for job in jobs]
        time.sleep(0.1)  # let the predictions queue up in the server
        health = c.get("/health")
        finished.append(("health", time.monotonic()))
        results = [f.result() for f in as_completed(futures)]
    assert health.status_code == 200
    assert len(results) == 50
    for cls, response in results:
        assert response.status_code == 200, response.text
        assert response.json()["label"] == cls
    # /health runs on the event loop, so it is answered while predictions are still in flight.
    assert [kind for kind, _ in finished][-1] == "predict"


def test_batch_endpoint_reports_each_file(client, labelled_images):
    files = [("files", (f"{cls}.jpg", data, "image/jpeg")) for cls, data in labelled_images[::2]]
    files.insert(1, ("files", ("broken.jpg", labelled_images[0][1][:500], "image/jpeg")))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["pizza.jpg", "broken.jpg", "steak.jpg", "sushi.jpg"]
    assert "damaged or truncated" in results[1]["error"]
    assert [r["label"] for r in results if "label" in r] == list(CLASSES)


@pytest.mark.parametrize("kwargs, status, message", [
    ({"content": b"hello, this is text"}, 415, "not an image"),
    ({"files": {"file": ("notes.txt", b"plain text", "text/plain")}}, 415, "not an image"),
    ({"content": b""}, 400, "empty"),
    ({"files": {"file": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty"),
    ({"files": {"photo": ("x.jpg", b"\xff\xd8", "image/jpeg")}}, 422, "named 'file'"),
])
def test_bad_inputs_get_clear_4xx(client, kwargs, status, message):
    response = client.post("/predict", **kwargs)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_truncated_real_jpeg_is_422(client, labelled_images):
    data = labelled_images[0][1]
    response = client.post("/predict", content=data[: len(data) // 2])
    assert response.status_code == 422
    assert "damaged or truncated" in response.json()["detail"]


def test_bad_query_and_method(client):
    assert client.post("/predict?top_k=0", content=b"x").status_code == 422
    assert client.get("/predict").status_code == 405


def test_oversized_body_is_413(client):
    too_big = b"\xff" * (20 * 2**20 + 1)
    declared = client.post("/predict", content=too_big)

    def chunks():  # no Content-Length: the limit must be enforced while the body streams in
        for i in range(0, len(too_big), 2**20):
            yield too_big[i:i + 2**20]

    streamed = client.post("/predict", content=chunks())
    for response in (declared, streamed):
        assert response.status_code == 413
        assert "20 MB limit" in response.json()["detail"]
    assert client.get("/health").status_code == 200  # the server is fine afterwards
