"""The web service's app: FoodVision as a JSON HTTP API (FastAPI) around one loaded predictor.

Endpoints: POST /predict -> {"label", "prob", "probs", "seconds", ...}; POST /predict/batch
(multipart, several `files`); GET /health/live (alias /health) answered from the event loop even
when saturated; GET /health/ready (model, runtime and bundle loaded, batching counters); GET /
points to the docs (/docs and /redoc work offline) and the schema (/openapi.json).

Concurrent requests share forward passes (batching.MicroBatcher); beyond max_queue requests in
progress a request waits up to queue_wait_s for a slot (admission.Admission), then gets a 503 with
Retry-After, and a request not answered within deadline_s gets a 503 too.
Every error body is {"detail": "..."} (schema.Error).
Every answer names its model (model_id, precision) and its request (request_id = X-Request-ID);
GET /metrics is web/metrics.py; with settings.prediction_log each prediction is one log record.
`python -m going_modular.deploy.web` (web/__main__.py) runs it under uvicorn.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import sys
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.monitor.log import PredictionLog, prediction_record
from going_modular.deploy.monitor.stats import image_stats, source_info
from going_modular.deploy.predictor import Predictor, predictor_from_args
from going_modular.deploy.web.admission import Admission, Overloaded
from going_modular.deploy.web.batching import MicroBatcher
from going_modular.deploy.web.guards import AllowedHosts, BodyGuard
from going_modular.deploy.web.metrics import Metrics
from going_modular.deploy.web.request_ids import RequestIds
from going_modular.deploy.web.schema import (
    IMAGE_BODY_DOC,
    RETRY_AFTER_S,
    RETRY_HEADERS,
    UPLOAD_ERRORS,
    BatchResult,
    Links,
    Live,
    Prediction,
    Ready,
    batch_body_doc,
    error_doc,
    error_response,
)
from going_modular.deploy.web.settings import DEFAULTS, SETTINGS_ENV, Settings, settings_from_env


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


def preprocess_or_4xx(predictor: Predictor, data: bytes, with_stats: bool = False):
    """The model's input for the bytes (and, for the prediction log, the image's statistics, taken
    here in the preprocessing pool from the pixels just made: source_info reads only the header)."""
    try:
        pixels = predictor.preprocess(data)
    except InvalidImageError as e:
        raise HTTPException(error_status(e), str(e)) from e
    return pixels, image_stats(pixels, source_info(data)) if with_stats else None


class Service:
    """One predictor behind a micro-batcher, with the per-request deadline; every prediction is
    counted (metrics) and logged (the prediction log), when those are on."""

    def __init__(self, predictor: Predictor, settings: Settings):
        self.predictor, self.settings = predictor, settings
        self.batcher = MicroBatcher(predictor.forward, settings.max_batch, settings.max_wait_ms)
        self.admission = Admission(settings.max_queue, settings.queue_wait_s)
        self.identity = {"model_id": predictor.model_id, "precision": predictor.precision}
        self.log = PredictionLog(settings.prediction_log) if settings.prediction_log else None
        self.metrics = Metrics(predictor) if settings.metrics else None
        if self.metrics is not None:
            self.batcher.on_batch = self.metrics.batch_size.observe
            self.admission.on_change = self.metrics.queue_depth.set

    async def predict_one(self, data: bytes, top_k: int | None, id: str | None = None) -> dict:
        start = time.perf_counter()
        pixels, stats = await self.batcher.prepare(preprocess_or_4xx, self.predictor, data, self.log is not None)
        row = await self.batcher.infer(pixels)
        result = {**self.predictor.result(row, time.perf_counter() - start, top_k), **self.identity}
        if id is not None:  # a real request, not the warm-up
            if self.log is not None:
                self.log.write(prediction_record(self.predictor, result, stats, mode="web", id=id))
            if self.metrics is not None:
                self.metrics.predicted(result)
        return result

    async def predict_file(self, name: str | None, data: bytes, top_k: int | None, id: str) -> dict:
        """One file of a batch request: a prediction, or its error (the other files still count)."""
        try:
            return {"filename": name, **await self.predict_one(data, top_k, id), "id": id}
        except HTTPException as e:
            if e.status_code == 503:
                raise
            return {"filename": name, "error": " ".join(str(e.detail).split())}

    async def within_deadline(self, work):
        try:
            async with asyncio.timeout(self.settings.deadline_s):
                return await work
        except TimeoutError:
            self.rejected("deadline")
            raise unavailable(f"The request was not answered within the {self.settings.deadline_s:g} s "
                              f"deadline; the server is busy.") from None

    def rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()

    def readiness(self) -> dict:
        p = self.predictor
        return {"status": "ready", "model": p.arch, "runtime": p.runtime, "classes": p.class_names,
                "bundle": str(p.path), **self.identity, "pid": os.getpid(),
                "prediction_log": None if self.log is None else self.log.status(),
                "batching": {**self.batcher.stats, "in_progress": self.admission.admitted,
                             "waiting": self.admission.waiting, **self.admission.stats,
                             "max_queue": self.settings.max_queue, "max_batch": self.settings.max_batch,
                             "max_wait_ms": self.settings.max_wait_ms}}


def add_error_handlers(app: FastAPI, service: Service) -> None:
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
        service.rejected("capacity")
        return error_response(503, f"{exc} Retry after {RETRY_AFTER_S} s.", RETRY_HEADERS)

    @app.exception_handler(MemoryError)
    async def out_of_memory(request: Request, exc: MemoryError):
        return error_response(503, "The server ran out of memory for this request; retry later or send "
                                   "smaller images.", RETRY_HEADERS)


def create_app(predictor: Predictor, settings: Settings = DEFAULTS) -> FastAPI:
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
        if service.log is not None:
            service.log.close()

    app = FastAPIOffline(title="FoodVision", version="2.0", lifespan=lifespan,
                         description=f"Classify food photos ({', '.join(predictor.class_names)}) with "
                                     f"the {predictor.arch} model ({predictor.runtime}).")
    app.state.ready = False
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if settings.allowed_hosts:
        app.add_middleware(AllowedHosts, allowed_hosts=list(settings.allowed_hosts))
    if service.metrics is not None:  # outside the guards: it also counts what they refuse (413, 408, 400)
        app.add_middleware(service.metrics.middleware)
    app.add_middleware(RequestIds)  # outermost: every answer, the guards' refusals too, names its request
    add_error_handlers(app, service)

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

    if service.metrics is not None:
        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            """Prometheus text format, every worker's counts added up (web/metrics.py)."""
            return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/predict", response_model=Prediction, openapi_extra=IMAGE_BODY_DOC, responses=UPLOAD_ERRORS)
    async def predict(request: Request,
                      top_k: int | None = Query(None, ge=1, description="keep the top k probs")) -> dict:
        """One image (multipart field `file`, or the raw body) -> {label, prob, probs, seconds, model_id,
        precision, request_id}."""
        rid = request.state.request_id  # web/request_ids.py: also the X-Request-ID header
        async with service.admission.slot():
            data = await read_upload(request)
            return {**await service.within_deadline(service.predict_one(data, top_k, rid)), "request_id": rid}

    @app.post("/predict/batch", response_model=BatchResult, response_model_exclude_none=True,
              openapi_extra=batch_body_doc(settings.max_batch_files), responses=UPLOAD_ERRORS)
    async def predict_batch(request: Request, top_k: int | None = Query(None, ge=1)) -> dict:
        """Several images (multipart fields `files`), batched with everyone else's. Each result is a
        prediction or {"filename", "error"}, so one bad file does not fail the others."""
        rid = request.state.request_id  # web/request_ids.py: also the X-Request-ID header
        async with service.admission.slot():
            files = await read_batch_uploads(request, settings.max_batch_files)
            megapixels = sum(decoded_megapixels(data, getattr(predictor, "resize", 512)) for _, data in files)
            if megapixels > settings.batch_megapixels:
                raise HTTPException(413, f"The images of this request decode to {megapixels:.0f} megapixels; "
                                         f"the limit per request is {settings.batch_megapixels:g}. Send fewer "
                                         f"or smaller images.")
            work = asyncio.gather(*(service.predict_file(name, data, top_k, f"{rid}/{i}")
                                    for i, (name, data) in enumerate(files)))
            return {"request_id": rid, "results": await service.within_deadline(work)}

    return app


def _warmup_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (224, 224)).save(buffer, format="PNG")
    return buffer.getvalue()


def serving_process() -> None:
    """Process-wide settings of a server process, once its app and model are loaded.

    - The event loop shares the GIL with the threads that decode images; at Python's default 5 ms
      switch interval a liveness probe waits behind them for several switch intervals, so the
      interval is 1 ms.
    - Python's full (generation 2) garbage collections walk every tracked object and stop every
      thread meanwhile. `gc.freeze()` takes the objects alive after start-up (the web stack, ONNX
      Runtime, NumPy: tens of thousands) out of their reach, so a full pass only walks what
      requests allocate.
    Both show in the slowest /health answer of `python -m benchmarks.web_load` (README has the table).
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
