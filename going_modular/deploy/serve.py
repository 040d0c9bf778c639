"""Web service: FoodVision as a JSON HTTP API (FastAPI + uvicorn) that holds under overload.

    python -m going_modular.deploy.serve --host 127.0.0.1 --port 8000        # the shipped Mini int8 bundle
    python -m going_modular.deploy.serve --model checkpoints/effnet_lite0_foodvision_mini.pth --workers 2

    curl -F file=@pizza.jpg http://127.0.0.1:8000/predict              # multipart upload
    curl --data-binary @pizza.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict   # raw bytes

Endpoints: POST /predict -> {"label", "prob", "probs", "seconds", ...}; POST /predict/batch
(multipart, several `files`); GET /health/live (alias /health) answered from the event loop even
when saturated; GET /health/ready (model, runtime and bundle loaded, batching counters); GET /
points to the docs (/docs and /redoc work offline) and the schema (/openapi.json).

Under load, concurrent requests share forward passes (--max-batch, --max-wait-ms); beyond
--max-queue requests in progress a request waits up to --queue-wait-s for a slot, then gets a
503 with Retry-After, and a request not answered within --deadline-s gets a 503 too. Every error
body is {"detail": "..."}.
SIGTERM stops accepting connections and finishes the requests in flight before exiting.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import socket
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict
from starlette._utils import parse_host_header
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from going_modular.deploy import cli
from going_modular.deploy.admission import Admission, Overloaded
from going_modular.deploy.batching import MicroBatcher
from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.predictor import Predicting, add_model_args, predictor_from_args

SETTINGS_ENV = "FOODVISION_SERVE_SETTINGS"  # how --workers processes receive the settings
RETRY_AFTER_S = 1
RETRY_HEADERS = {"Retry-After": str(RETRY_AFTER_S)}  # on every 503


@dataclass(frozen=True)
class Settings:
    """Every limit of the service (the CLI flags; README lists them)."""
    max_body_mb: float = 20.0  # largest request body
    max_batch_files: int = 32  # files in one /predict/batch request
    batch_megapixels: float = 100.0  # pixels decoded for one /predict/batch request, all files together
    max_batch: int = 32  # images in one forward pass
    max_wait_ms: float = 5.0  # longest a batch waits for requests still preprocessing
    max_queue: int = 32  # requests in progress (reading, preprocessing, queued, in a pass); beyond: wait
    queue_wait_s: float = 1.0  # longest a request beyond max_queue waits for a slot; then 503 (admission.py)
    deadline_s: float = 10.0  # from a complete body to the answer; beyond: 503
    body_timeout_s: float = 30.0  # to receive a whole request body; beyond: 408
    header_timeout_s: float = 10.0  # to send a complete request head after connecting or a response
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 256  # open connections per worker; beyond: 503 and close
    max_header_kb: int = 16  # request line + headers
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)  # empty: any Host header

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


@lru_cache(maxsize=1)
def settings_from_env() -> Settings:
    """The settings main() put in the environment (worker processes start from a fresh import)."""
    raw = json.loads(os.environ.get(SETTINGS_ENV, "{}"))
    return Settings(**{**raw, "allowed_hosts": tuple(raw.get("allowed_hosts", ()))})


# ---- the contract: response bodies as they appear in /openapi.json ----

class Error(BaseModel):
    """The one error body of every non-2xx answer."""
    detail: str


class Prediction(BaseModel):
    model_config = ConfigDict(extra="allow")  # later result keys (e.g. OOD scores) pass through
    label: str
    prob: float
    probs: dict[str, float]
    seconds: float


class BatchItem(BaseModel):
    """A prediction for one file, or {"filename", "error"} when that file is not a usable image."""
    model_config = ConfigDict(extra="allow")
    filename: str | None = None
    label: str | None = None
    prob: float | None = None
    probs: dict[str, float] | None = None
    seconds: float | None = None
    error: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]


class Live(BaseModel):
    status: str
    model: str
    runtime: str
    classes: list[str]


class Ready(Live):
    bundle: str
    pid: int
    batching: dict[str, int | float]


class Links(BaseModel):
    message: str
    docs: str
    redoc: str
    openapi: str


def error_doc(description: str, retry: bool = False) -> dict:
    doc = {"model": Error, "description": description}
    if retry:
        doc["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                          "schema": {"type": "integer"}}}
    return doc


UPLOAD_ERRORS = {
    400: error_doc("Empty upload or malformed multipart body."),
    408: error_doc("The request body did not arrive in time (--body-timeout-s)."),
    413: error_doc("Body over --max-body-mb, or images over the request's pixel budget."),
    415: error_doc("Not an image format we read, or not the expected content type."),
    422: error_doc("Damaged or oversized image, missing field or invalid query parameter."),
    503: error_doc("At capacity (no slot of --max-queue freed within --queue-wait-s), past the deadline "
                   "(--deadline-s) or out of memory: retry after Retry-After seconds.", retry=True),
}
BINARY = {"type": "string", "format": "binary", "minLength": 1}  # an empty upload is a 400
IMAGE_CONTENT = {"schema": BINARY}
# The endpoints read the body themselves (to accept multipart *and* raw bytes), so the request
# body is described here for /docs and /openapi.json.
IMAGE_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": BINARY}}},
    "image/*": IMAGE_CONTENT, "application/octet-stream": IMAGE_CONTENT}}}


def batch_body_doc(max_files: int) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"], "properties": {"files": {
            "type": "array", "minItems": 1, "maxItems": max_files,
            "items": BINARY}}}}}}}


# ---- protections below the app: connections, heads, bodies, hosts ----

class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol plus what it lacks against idle or half-sent connections: a cap on
    open connections (beyond it: a JSON 503, then close) and a deadline for each request head, so
    connections that never finish their headers cannot pile up until file descriptors run out."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # No Nagle delay. asyncio sets TCP_NODELAY only on sockets it knows are TCP; the listening
        # socket that --workers hands to each worker process comes back with proto 0, so without
        # this every keep-alive response there waited ~40 ms for a delayed ACK (52 ms vs 8 ms a request).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = settings_from_env()
        if len(self.connections) > settings.max_connections:
            body = Error(detail=f"Too many open connections (limit {settings.max_connections}); "
                                f"retry later.").model_dump_json().encode()
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                            b"retry-after: %d\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                            % (RETRY_AFTER_S, len(body), body))
            transport.close()
            return
        self._expect_head_within(settings.header_timeout_s, waiting_after=None)

    def on_response_complete(self) -> None:
        finished = self.cycle  # captured first: a pipelined request may start inside super()
        super().on_response_complete()
        self._expect_head_within(settings_from_env().header_timeout_s, waiting_after=finished)

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _expect_head_within(self, seconds: float, waiting_after) -> None:
        def expire():
            # No new request head since the timer started (self.cycle is replaced when one arrives).
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

        # One pending timer per connection: a timer left running for every answered request kept
        # that request's objects alive for header_timeout_s (3,300 of them at 230 req/s), and the
        # garbage collector's full passes over them stopped the server for up to 129 ms.
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(seconds, expire)


class BodyGuard:
    """ASGI middleware: 413 for bodies over `max_bytes` (counted as they arrive, never buffered
    first) and 408 when a body takes longer than `timeout_s` to arrive."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.too_large = f"Request body is larger than the {max_bytes / 2**20:g} MB limit."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(413, self.too_large)(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received, complete = 0, False

        async def guarded_receive():
            nonlocal received, complete
            if complete:  # after the body only a disconnect can come: no deadline for that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"The request body did not arrive within {self.timeout_s:g} s.") from None
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > self.max_bytes:
                raise HTTPException(413, self.too_large)  # turned into a JSON 413 by the app
            return message

        await self.app(scope, guarded_receive, send)


class AllowedHosts(TrustedHostMiddleware):
    """Starlette's Host allow-list (--allowed-hosts, '*.example.com' patterns), answering a refused
    Host with the service's JSON error body instead of plain text."""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.allow_any:
            parsed = parse_host_header(Headers(scope=scope).get("host"))
            host = parsed.host.lower() if parsed else ""
            if not any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.allowed_hosts):
                return await error_response(400, "Invalid Host header.")(scope, receive, send)
        await self.app(scope, receive, send)


# ---- request handling ----

def error_response(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(Error(detail=detail).model_dump(), status_code=status, headers=headers)


def unavailable(detail: str) -> HTTPException:
    return HTTPException(503, detail, headers=RETRY_HEADERS)


def error_status(error: InvalidImageError) -> int:
    """415 when the bytes are not an image format at all, 422 when it is an image we cannot use."""
    return 415 if isinstance(error.__cause__, UnidentifiedImageError) else 422


async def read_upload(request: Request) -> bytes:
    """The image bytes of a request: the multipart field `file`, or else the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "Send the image as a multipart file field named 'file' "
                                         "(or as the raw request body).")
            data = await upload.read()
    else:
        data = await request.body()
    if not data:
        raise HTTPException(400, "The uploaded file is empty.")
    return data


async def read_batch_uploads(request: Request, max_files: int) -> list[tuple[str | None, bytes]]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "Send the images as multipart/form-data fields named 'files'.")
    async with request.form(max_files=max_files) as form:
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not uploads:
            raise HTTPException(422, "Send the images as multipart file fields named 'files'.")
        files = [(upload.filename, await upload.read()) for upload in uploads]
    empty = [name for name, data in files if not data]
    if empty:  # a client mistake, as on /predict (unlike a damaged image, which is that file's error)
        raise HTTPException(400, f"The uploaded file {empty[0]!r} is empty.")
    return files


def decoded_megapixels(data: bytes, max_side_hint: int) -> float:
    """Pixels the loader will decode for these bytes, from the header alone (JPEGs decode reduced,
    as load_image does); 0 for bytes that are not an image (their own error is reported later).

    Not image.decoded_bytes_estimate: that one counts bytes of decode memory (per pixel format) and
    raises for a file over the per-image limits, where this request-wide budget (--batch-megapixels)
    sums pixels and must still count such a file."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max_side_hint, max_side_hint))
            return img.width * img.height / 1e6
    except Exception:  # any unreadable header: load_image reports it for that file
        return 0.0


def preprocess_or_4xx(predictor: Predicting, data: bytes):
    try:
        return predictor.preprocess(data)
    except InvalidImageError as e:
        raise HTTPException(error_status(e), str(e)) from e


class Service:
    """One predictor behind a micro-batcher, with the per-request deadline."""

    def __init__(self, predictor: Predicting, settings: Settings):
        self.predictor, self.settings = predictor, settings
        self.batcher = MicroBatcher(predictor.forward, settings.max_batch, settings.max_wait_ms)
        self.admission = Admission(settings.max_queue, settings.queue_wait_s)

    async def predict_one(self, data: bytes, top_k: int | None) -> dict:
        start = time.perf_counter()
        item = await self.batcher.prepare(preprocess_or_4xx, self.predictor, data)
        row = await self.batcher.infer(item)
        return self.predictor.result(row, time.perf_counter() - start, top_k)

    async def predict_file(self, name: str | None, data: bytes, top_k: int | None) -> dict:
        """One file of a batch request: a prediction, or its error (the other files still count)."""
        try:
            return {"filename": name, **await self.predict_one(data, top_k)}
        except HTTPException as e:
            if e.status_code == 503:
                raise
            return {"filename": name, "error": " ".join(str(e.detail).split())}

    async def within_deadline(self, work):
        try:
            async with asyncio.timeout(self.settings.deadline_s):
                return await work
        except TimeoutError:
            raise unavailable(f"The request was not answered within the {self.settings.deadline_s:g} s "
                              f"deadline; the server is busy.") from None

    def readiness(self) -> dict:
        p = self.predictor
        return {"status": "ready", "model": p.arch, "runtime": p.runtime, "classes": p.class_names,
                "bundle": str(getattr(p, "path", getattr(p, "checkpoint", ""))), "pid": os.getpid(),
                "batching": {**self.batcher.stats, "in_progress": self.admission.admitted,
                             "waiting": self.admission.waiting, **self.admission.stats,
                             "max_queue": self.settings.max_queue, "max_batch": self.settings.max_batch,
                             "max_wait_ms": self.settings.max_wait_ms}}


def add_error_handlers(app: FastAPI) -> None:
    """Every error, whoever raises it, leaves as {"detail": "..."}."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        messages = [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "; ".join(messages))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        return error_response(503, f"{exc} Retry after {RETRY_AFTER_S} s.", RETRY_HEADERS)

    @app.exception_handler(MemoryError)
    async def out_of_memory(request: Request, exc: MemoryError):
        return error_response(503, "The server ran out of memory for this request; retry later or send "
                                   "smaller images.", RETRY_HEADERS)


def create_app(predictor: Predicting, settings: Settings = Settings()) -> FastAPI:
    """The FastAPI app around an already-loaded predictor (loaded once, shared by all requests)."""
    service = Service(predictor, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        # Warm up once at startup so the first real request does not pay for lazy initialisation.
        await service.predict_one(_warmup_image(), None)
        app.state.ready = True
        yield
        await service.batcher.stop()  # uvicorn calls this only after the requests in flight finished

    app = FastAPIOffline(title="FoodVision", version="2.0", lifespan=lifespan,
                         description=f"Classify food photos ({', '.join(predictor.class_names)}) with "
                                     f"the {predictor.arch} model ({predictor.runtime}).")
    app.state.ready = False
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if settings.allowed_hosts:
        app.add_middleware(AllowedHosts, allowed_hosts=list(settings.allowed_hosts))
    add_error_handlers(app)

    @app.get("/", response_model=Links)
    async def root() -> dict:
        return {"message": "FoodVision API: POST an image to /predict.", "docs": "/docs", "redoc": "/redoc",
                "openapi": "/openapi.json"}

    @app.get("/health/live", response_model=Live)
    @app.get("/health", response_model=Live)
    async def live() -> dict:
        """Liveness: async, so the event loop answers it even while every worker thread is busy."""
        return {"status": "ok", "model": predictor.arch, "runtime": predictor.runtime,
                "classes": predictor.class_names}

    @app.get("/health/ready", response_model=Ready, responses={503: error_doc("The model is not loaded yet.")})
    async def ready(request: Request) -> dict:
        """Readiness: the model is loaded and warmed up; which runtime and bundle serve (a fallback
        shows here) and the batching counters."""
        if not request.app.state.ready:
            raise HTTPException(503, "The model is still loading.")
        return service.readiness()

    @app.post("/predict", response_model=Prediction, openapi_extra=IMAGE_BODY_DOC, responses=UPLOAD_ERRORS)
    async def predict(request: Request,
                      top_k: int | None = Query(None, ge=1, description="keep the top k probs")) -> dict:
        """One image (multipart field `file`, or the raw body) -> {label, prob, probs, seconds}."""
        async with service.admission.slot():
            data = await read_upload(request)
            return await service.within_deadline(service.predict_one(data, top_k))

    @app.post("/predict/batch", response_model=BatchResult, response_model_exclude_none=True,
              openapi_extra=batch_body_doc(settings.max_batch_files), responses=UPLOAD_ERRORS)
    async def predict_batch(request: Request, top_k: int | None = Query(None, ge=1)) -> dict:
        """Several images (multipart fields `files`), batched with everyone else's. Each result is a
        prediction or {"filename", "error"}, so one bad file does not fail the others."""
        async with service.admission.slot():
            files = await read_batch_uploads(request, settings.max_batch_files)
            megapixels = sum(decoded_megapixels(data, getattr(predictor, "resize", 512)) for _, data in files)
            if megapixels > settings.batch_megapixels:
                raise HTTPException(413, f"The images of this request decode to {megapixels:.0f} megapixels; "
                                         f"the limit per request is {settings.batch_megapixels:g}. Send fewer "
                                         f"or smaller images.")
            work = asyncio.gather(*(service.predict_file(name, data, top_k) for name, data in files))
            return {"results": await service.within_deadline(work)}

    return app


def _warmup_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (224, 224)).save(buffer, format="PNG")
    return buffer.getvalue()


def serving_process() -> None:
    """Process-wide settings of a server process, once its app and model are loaded.

    - The event loop shares the GIL with the threads that decode images; at Python's default 5 ms
      switch interval a liveness probe waited up to 72 ms behind them at 50 clients, 42 ms at 1 ms.
    - Python's full (generation 2) garbage collections walk every tracked object and stop every
      thread meanwhile. `gc.freeze()` takes the ~66,000 objects alive after start-up (the web stack,
      ONNX Runtime, NumPy) out of their reach: under 200 clients the longest full pass fell from
      129 to 47 ms, and to 18-28 ms once requests' objects stopped outliving them (one head timer
      per connection, GuardedH11Protocol).
    (benchmarks/web_load.py and gc.callbacks timings, same machine and load; README has the table.)
    """
    sys.setswitchinterval(0.001)
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """uvicorn's app factory for --workers N: each worker process loads its own model."""
    args = json.loads(os.environ[SETTINGS_ENV + "_MODEL"])
    app = create_app(predictor_from_args(argparse.Namespace(**args)), settings_from_env())
    serving_process()
    return app


# ---- command line ----

def get_args_parser() -> argparse.ArgumentParser:
    d = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on all interfaces")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes, each with its own model")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_args(parser)
    batching = parser.add_argument_group("batching and admission control")
    batching.add_argument("--max-batch", type=int, default=d.max_batch, help="images in one forward pass")
    batching.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                          help="longest a batch waits for requests that are still preprocessing")
    batching.add_argument("--max-queue", type=int, default=d.max_queue,
                          help="requests in progress per worker; beyond it a request waits (--queue-wait-s)")
    batching.add_argument("--queue-wait-s", type=float, default=d.queue_wait_s,
                          help="longest a request beyond --max-queue waits for a slot, then 503 + Retry-After "
                               "(0: at once)")
    batching.add_argument("--deadline-s", type=float, default=d.deadline_s,
                          help="a request not answered this long after its body arrived gets 503")
    limits = parser.add_argument_group("request and connection limits")
    limits.add_argument("--max-body-mb", "--max-mb", type=float, default=d.max_body_mb, help="largest request body")
    limits.add_argument("--max-batch-files", type=int, default=d.max_batch_files, help="files per /predict/batch")
    limits.add_argument("--batch-megapixels", type=float, default=d.batch_megapixels,
                        help="decoded pixels per /predict/batch request, all files together")
    limits.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s, help="to receive a whole body")
    limits.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s,
                        help="to send a complete request head (after connecting or after a response)")
    limits.add_argument("--keep-alive-s", type=int, default=d.keep_alive_s, help="idle keep-alive connections close")
    limits.add_argument("--max-connections", type=int, default=d.max_connections,
                        help="open connections per worker; beyond it: 503 and close")
    limits.add_argument("--max-header-kb", type=int, default=d.max_header_kb, help="request line + headers")
    limits.add_argument("--allowed-hosts", nargs="+", default=[], metavar="HOST",
                        help="accept only these Host headers ('*.example.com' allowed); default: any")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = set(Settings.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in names}
    return Settings(**given | {"allowed_hosts": tuple(args.allowed_hosts)})


def main(argv=None) -> int:
    import uvicorn

    args = get_args_parser().parse_args(argv)
    settings = settings_from_args(args)
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    settings_from_env.cache_clear()
    # Loaded before the server starts, so a bad bundle is a one-line error (cli.run), not a
    # traceback from uvicorn's startup.
    predictor = predictor_from_args(args)
    if args.workers > 1:
        del predictor  # each worker loads its own
        os.environ[SETTINGS_ENV + "_MODEL"] = json.dumps({"model": str(args.model), "threads": args.threads})
        app = "going_modular.deploy.serve:app_from_env"
    else:
        app = create_app(predictor, settings)
        serving_process()
    uvicorn.run(app, factory=args.workers > 1, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level, http=GuardedH11Protocol,
                timeout_keep_alive=settings.keep_alive_s,
                h11_max_incomplete_event_size=settings.max_header_kb * 1024,
                # SIGTERM: let the requests in flight finish (body + deadline), then exit anyway.
                timeout_graceful_shutdown=int(settings.body_timeout_s + settings.deadline_s) + 1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
