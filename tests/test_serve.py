"""Web service end to end: real uvicorn servers in subprocesses on 127.0.0.1, real images, real HTTP,
raw sockets where the test is about connections, memory read from /proc."""
from __future__ import annotations

import io
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from demo_support import proc_status_mb
from PIL import Image
from server_support import serve_in_subprocess

from going_modular.deploy.predictor import OnnxPredictor

CLASSES = ("pizza", "steak", "sushi")
HEADER_TIMEOUT_S = 2
MAX_CONNECTIONS = 40
# Schema-valid bytes may still not be an image: 413/415/422 are honest answers to them too.
SCHEMATHESIS_CONFIG = '[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "413", "415", "422", "503"]\n'


@pytest.fixture(scope="module")
def server():
    """The shipped Mini bundle with short head/body timeouts, a small connection cap and a Host allow-list."""
    args = ("--max-wait-ms", "20", "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", "2",
            "--max-connections", str(MAX_CONNECTIONS), "--allowed-hosts", "127.0.0.1", "localhost")
    with serve_in_subprocess(args=args) as app:
        yield app


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def images(pss_dir) -> list[tuple[str, bytes]]:
    """(true class, JPEG bytes) for 4 real test images per class."""
    return [(cls, p.read_bytes()) for cls in CLASSES for p in sorted((pss_dir / "test" / cls).glob("*.jpg"))[:4]]


def half_sent(server, head: bytes = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n") -> socket.socket:
    """A connection that sent part of a request and then went quiet."""
    host, port = server.url.rstrip("/").rsplit("/", 1)[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(head)
    return s


def half_sent_body(server, data: bytes) -> socket.socket:
    """A /predict request whose head and first 1000 body bytes are sent (the caller sends the rest)."""
    return half_sent(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(data) + data[:1000])


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def assert_error(response: httpx.Response, status: int, message: str) -> None:
    """Every error has one shape: {"detail": "<message>"}, as JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail"} and message in body["detail"]


def test_root_liveness_and_readiness(client):
    assert client.get("/").json()["docs"] == "/docs"
    for path in ("/health", "/health/live"):
        body = client.get(path).json()
        assert body["status"] == "ok" and body["classes"] == list(CLASSES) and body["model"] == "effnet_lite0"
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["runtime"] == "onnx-int8"
    assert ready["bundle"].endswith("foodvision_mini.int8.onnx")


def test_docs_work_offline(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "googleapis" not in html
        scripts = [part.split('"')[0] for part in html.split('src="')[1:]]
        assert scripts and all(src.startswith("/static-offline-docs/") for src in scripts)
        for src in scripts:
            asset = client.get(src)
            assert asset.status_code == 200 and len(asset.content) > 100_000


def test_openapi_documents_every_error_with_one_shape(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path in ("/predict", "/predict/batch"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "408", "413", "415", "422", "503"} <= set(responses)
        for code in ("400", "408", "413", "415", "422", "503"):
            assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert "Retry-After" in responses["503"]["headers"]


def test_multipart_and_raw_uploads_predict_true_class(client, images):
    for cls, data in images[::4]:
        multipart = client.post("/predict", files={"file": ("photo.jpg", data, "image/jpeg")})
        raw = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
        assert multipart.status_code == raw.status_code == 200
        assert multipart.json()["label"] == raw.json()["label"] == cls
        body = raw.json()
        assert {"label", "prob", "probs", "seconds", "known", "ood_score"} <= set(body)
        assert body["known"] is True and isinstance(body["ood_score"], float)  # in-menu photos: known
        assert list(body["probs"]) == sorted(body["probs"], key=body["probs"].get, reverse=True)
        assert body["prob"] == body["probs"][cls] and sum(body["probs"].values()) == pytest.approx(1, abs=1e-4)


def test_top_k(client, images):
    body = client.post("/predict?top_k=1", content=images[0][1]).json()
    assert list(body["probs"]) == [body["label"]]


def test_concurrent_requests_are_batched_and_each_matches_its_own_single_prediction(server, client, images):
    """Any interleaving: 48 requests in random order from 16 threads; each answer must be the
    single-image prediction of the image that request sent, although the server batched them."""
    reference = OnnxPredictor()
    expected = [reference.predict(data)["probs"] for _, data in images]
    order = [i % len(images) for i in range(48)]
    random.Random(0).shuffle(order)
    with httpx.Client(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=20)) as c, \
            ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: c.post("/predict", content=images[i][1]), order))
    for i, response in zip(order, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["probs"] == pytest.approx(expected[i], abs=1e-6)
    assert client.get("/health/ready").json()["batching"]["largest_batch"] > 1


def test_batch_endpoint_reports_each_file(client, images):
    files = [("files", (f"{cls}.jpg", data, "image/jpeg")) for cls, data in images[::4]]
    files.insert(1, ("files", ("broken.jpg", images[0][1][:500], "image/jpeg")))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["pizza.jpg", "broken.jpg", "steak.jpg", "sushi.jpg"]
    assert set(results[1]) == {"filename", "error"} and "damaged or truncated" in results[1]["error"]
    assert [r["label"] for r in results if "label" in r] == list(CLASSES)


def test_batch_request_over_pixel_budget_is_413_before_decoding(server, client):
    """Two 14 KB PNGs that declare 100 megapixels each: refused from their headers, RSS unchanged."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")
    bomb = buffer.getvalue()
    before = proc_status_mb(server.proc.pid, "VmRSS")
    response = client.post("/predict/batch", files=[("files", (f"{i}.png", bomb, "image/png")) for i in range(2)])
    assert_error(response, 413, "200 megapixels")
    assert proc_status_mb(server.proc.pid, "VmRSS") - before < 50  # decoding them would take 600 MB


@pytest.mark.parametrize("kwargs, status, message", [
    ({"content": b"hello, this is text"}, 415, "not an image"),
    ({"files": {"file": ("notes.txt", b"plain text", "text/plain")}}, 415, "not an image"),
    ({"content": b""}, 400, "empty"),
    ({"files": {"file": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty"),
    ({"files": {"photo": ("x.jpg", b"\xff\xd8", "image/jpeg")}}, 422, "named 'file'"),
])
def test_bad_inputs_get_clear_4xx(client, kwargs, status, message):
    assert_error(client.post("/predict", **kwargs), status, message)


def test_truncated_real_jpeg_is_422(client, images):
    data = images[0][1]
    assert_error(client.post("/predict", content=data[: len(data) // 2]), 422, "damaged or truncated")


def test_bad_query_method_and_host(client):
    assert_error(client.post("/predict?top_k=0", content=b"x"), 422, "top_k")
    assert_error(client.get("/predict"), 405, "Method Not Allowed")
    assert_error(client.get("/health", headers={"Host": "evil.example"}), 400, "Invalid Host")


def test_oversized_body_is_413(client):
    too_big = b"\xff" * (20 * 2**20 + 1)
    declared = client.post("/predict", content=too_big)

    def chunks():  # no Content-Length: the limit must be enforced while the body streams in
        for i in range(0, len(too_big), 2**20):
            yield too_big[i:i + 2**20]

    for response in (declared, client.post("/predict", content=chunks())):
        assert_error(response, 413, "20 MB limit")
    assert client.get("/health").status_code == 200  # the server is fine afterwards


def test_every_answer_names_its_request(client, images):
    """X-Request-ID on refusals too (the app's 415, validation's 422, the guards' 413 and 400): a client's
    plain id is kept, anything else replaced by a fresh one."""
    mine = {"X-Request-ID": "client-42"}
    ok = client.post("/predict", content=images[0][1], headers=mine)
    assert ok.status_code == 200 and ok.headers["x-request-id"] == ok.json()["request_id"] == "client-42"
    refusals = [client.post("/predict", content=b"hello, this is text", headers=mine),
                client.post("/predict?top_k=0", content=b"x", headers=mine),
                client.post("/predict", content=b"\xff" * (20 * 2**20 + 1), headers=mine),
                client.get("/health", headers={"Host": "evil.example", **mine})]
    assert [r.status_code for r in refusals] == [415, 422, 413, 400]
    assert all(r.headers["x-request-id"] == "client-42" for r in refusals)
    replaced = client.post("/predict", content=b"hello", headers={"X-Request-ID": "not a plain id!"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


def test_body_that_stops_arriving_is_408(server):
    s = half_sent(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b"\xff" * 10)
    with s:
        status_line, _, body = read_all(s).partition(b"\r\n")
    assert b" 408 " in status_line and b"did not arrive within 2 s" in body


def test_half_sent_connections_neither_starve_health_nor_stay_open(server, client):
    """Slowloris: idle connections that never finish their request head. /health still answers;
    beyond --max-connections a new connection gets a JSON 503 at once; after --header-timeout-s
    the server has closed them all."""
    idle = [half_sent(server) for _ in range(MAX_CONNECTIONS - 5)]
    assert client.get("/health").status_code == 200
    # 5 over the cap (the client holds one more); silent, so that the refusal is not reset by unread bytes
    extra = [half_sent(server, b"") for _ in range(10)]
    answers = [read_all(s) for s in idle + extra]  # each ends when the server closes it
    refused = [a for a in answers if a]
    assert refused and all(a.startswith(b"HTTP/1.1 503") and b"Too many open connections" in a for a in refused)
    assert len(answers) - len(refused) >= MAX_CONNECTIONS - 5  # the idle ones were closed silently
    for s in idle + extra:
        s.close()
    assert client.get("/health").status_code == 200


def test_schemathesis_finds_no_failures(server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                          f"{server.url}openapi.json", "--checks", "all", "--max-examples", "40", "--seed", "1",
                          "--no-shrink"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-5000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def batching_counters(server) -> dict:
    return httpx.get(f"{server.url}health/ready", timeout=60).json()["batching"]


def wait_until(server, counter: str, value: int) -> None:
    """Until the server's batching counter (in_progress, waiting) reads `value` (a guard against
    hanging where it never does, not a timing check)."""
    give_up = time.monotonic() + 120
    while (now := batching_counters(server)[counter]) != value:
        assert time.monotonic() < give_up, f"{counter} stayed at {now}, never {value}"
        time.sleep(0.05)


def post_raw(server, data: bytes) -> bytes:
    """One POST /predict of `data` on its own raw connection: the whole answer."""
    with half_sent_body(server, data) as s:
        s.sendall(data[1000:])
        return read_all(s)


@pytest.fixture(scope="module")
def no_waiting():
    """One request in progress at a time, and beyond it a refusal at once (--queue-wait-s 0)."""
    with serve_in_subprocess(args=("--max-queue", "1", "--queue-wait-s", "0")) as app:
        yield app


@pytest.fixture(scope="module")
def short_wait():
    """Two requests in progress at most; the others wait up to 1 s for a slot."""
    with serve_in_subprocess(args=("--max-queue", "2", "--queue-wait-s", "1")) as app:
        yield app


@pytest.fixture(scope="module")
def queue_of_one():
    """One request in progress at a time; the next waits up to 60 s for the slot."""
    with serve_in_subprocess(args=("--max-queue", "1", "--queue-wait-s", "60")) as app:
        yield app


def test_full_queue_answers_503_with_retry_after_at_once(no_waiting, images):
    data = images[0][1]
    # A request whose body is half sent holds the only slot (bodies are read inside admission,
    # which bounds the memory they take).
    holder = half_sent_body(no_waiting, data)
    with holder, httpx.Client(base_url=no_waiting.url, timeout=60) as c:
        wait_until(no_waiting, "in_progress", 1)  # the server has admitted the held request
        refused = c.post("/predict", content=data)
        assert_error(refused, 503, "at capacity")
        assert refused.headers["retry-after"] == "1"
        assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])  # "busy" names its request too
        assert c.get("/health/live").status_code == 200
        holder.sendall(data[1000:])
        assert b'"label":"pizza"' in read_all(holder)
        assert c.post("/predict", content=data).status_code == 200  # the slot is free again


def test_request_beyond_max_queue_waits_for_a_slot_and_is_served(queue_of_one, images):
    (_, pizza), (_, steak) = images[0], images[4]
    holder = half_sent_body(queue_of_one, pizza)
    with holder, ThreadPoolExecutor(1) as pool:
        wait_until(queue_of_one, "in_progress", 1)
        waiter = pool.submit(post_raw, queue_of_one, steak)
        wait_until(queue_of_one, "waiting", 1)  # it waits for the slot instead of a 503
        holder.sendall(pizza[1000:])
        assert b'"label":"pizza"' in read_all(holder)
        answer = waiter.result(timeout=120)
    assert answer.startswith(b"HTTP/1.1 200") and b'"label":"steak"' in answer
    counters = batching_counters(queue_of_one)
    assert counters["waited"] >= 1 and counters["refused"] == 0
    assert counters["in_progress"] == counters["waiting"] == 0  # every slot came back


def test_request_that_waited_past_the_budget_gets_503_with_retry_after(short_wait, images):
    data = images[0][1]
    holders = [half_sent_body(short_wait, data) for _ in range(2)]  # both slots, held until the 503 came
    with httpx.Client(base_url=short_wait.url, timeout=60) as c:
        wait_until(short_wait, "in_progress", 2)
        refused = c.post("/predict", content=data)
        assert_error(refused, 503, "none freed within 1 s")
        assert refused.headers["retry-after"] == "1"
        assert c.get("/health/live").status_code == 200
        assert batching_counters(short_wait)["refused"] >= 1
        for holder in holders:
            with holder:
                holder.sendall(data[1000:])
                assert b'"label":"pizza"' in read_all(holder)


def test_clients_that_never_back_off_get_only_200_or_503_and_liveness_answers(short_wait, images):
    """A burst of 60 keep-alive connections (30 times --max-queue), each posting 3 photos back to back
    and ignoring Retry-After: every answer is a prediction or a 503 with Retry-After (no reset, no
    500, no timeout), /health/live answers throughout, and every slot comes back."""
    def client(k: int) -> list[httpx.Response]:
        with httpx.Client(base_url=short_wait.url, timeout=120) as c:
            return [c.post("/predict", content=images[(k + i) % len(images)][1]) for i in range(3)]

    with ThreadPoolExecutor(max_workers=60) as pool:
        burst = [pool.submit(client, k) for k in range(60)]
        with httpx.Client(base_url=short_wait.url, timeout=60) as c:
            probes = 0
            while probes == 0 or not all(f.done() for f in burst):
                assert c.get("/health/live").status_code == 200
                probes += 1
                time.sleep(0.2)
        answers = [response for f in burst for response in f.result()]
    assert len(answers) == 180 and {r.status_code for r in answers} <= {200, 503}
    for r in answers:
        if r.status_code == 200:
            assert r.json()["label"] in CLASSES
        else:
            assert_error(r, 503, "at capacity")
            assert r.headers["retry-after"] == "1"
    assert any(r.status_code == 200 for r in answers)
    counters = batching_counters(short_wait)
    assert counters["in_progress"] == counters["waiting"] == 0


def test_sigterm_finishes_requests_in_flight(queue_of_one, images):
    """After SIGTERM both the request in progress and the one waiting for its slot are answered."""
    (_, pizza), (_, steak) = images[0], images[4]
    in_flight = half_sent_body(queue_of_one, pizza)
    with in_flight, ThreadPoolExecutor(1) as pool:
        wait_until(queue_of_one, "in_progress", 1)  # the server has admitted it
        waiting = pool.submit(post_raw, queue_of_one, steak)
        wait_until(queue_of_one, "waiting", 1)
        queue_of_one.proc.send_signal(signal.SIGTERM)
        in_flight.sendall(pizza[1000:])  # the rest of the body arrives after SIGTERM
        answer = read_all(in_flight)
        waited = waiting.result(timeout=120)
    assert answer.startswith(b"HTTP/1.1 200") and b'"label":"pizza"' in answer
    assert waited.startswith(b"HTTP/1.1 200") and b'"label":"steak"' in waited
    # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status says what stopped it.
    assert queue_of_one.proc.wait(timeout=60) == -signal.SIGTERM
    with pytest.raises(httpx.TransportError):  # and it is gone
        httpx.get(f"{queue_of_one.url}health/live", timeout=5)


def test_out_of_memory_is_503_and_the_server_keeps_serving(images):
    """A decode that the budget admits but the host cannot hold: MemoryError -> 503 + Retry-After, never a 500.
    The budget is raised so that a 16-bit PNG declaring 240 MB is admitted, and the server's address space
    is capped (prlimit) at 100 MB above what it uses, so decoding it really runs out of memory."""
    from test_image_budget import SIDE, hostile_png

    bomb = hostile_png(SIDE, 16, 2 * SIDE)
    with serve_in_subprocess(FOODVISION_MAX_DECODE_MB="4000") as app, \
            httpx.Client(base_url=app.url, timeout=120) as c:
        for _, data in images[:4]:  # warm: the threads and arenas a request needs exist before the cap
            assert c.post("/predict", content=data).status_code == 200
        pid = app.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
        resource.prlimit(pid, resource.RLIMIT_AS, (int((proc_status_mb(pid, "VmSize") + 100) * 2**20), hard))
        try:
            response = c.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
        finally:
            resource.prlimit(pid, resource.RLIMIT_AS, (hard, hard))
        assert_error(response, 503, "ran out of memory")
        assert response.headers["retry-after"] == "1"
        cls, data = images[-1]
        assert c.post("/predict", content=data).json()["label"] == cls  # nothing lost: it still serves
        assert "Traceback" not in app.log()


def test_workers_each_load_a_model_and_all_answer(images):
    """--workers 2: two processes, each with its own model, both answering correctly."""
    with serve_in_subprocess(args=("--workers", "2")) as app, \
            httpx.Client(base_url=app.url, timeout=120) as c, ThreadPoolExecutor(max_workers=8) as pool:
        def predict(item):
            cls, data = item
            return cls, c.post("/predict", content=data).json()

        for cls, answer in pool.map(predict, images * 2):
            assert answer["label"] == cls
        pids, deadline = set(), time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:  # each new connection goes to either worker
            pids.add(httpx.get(f"{app.url}health/ready", timeout=60).json()["pid"])
        assert len(pids) == 2 and app.proc.pid not in pids
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(app.proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        assert pids <= set(workers)
