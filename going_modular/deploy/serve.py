"""Web service: FoodVision as a JSON HTTP API (FastAPI + uvicorn).

    python -m going_modular.deploy.serve --checkpoint demos/foodvision_mini/effnet_lite0_foodvision_mini.pth \\
        --host 127.0.0.1 --port 8000

    curl -F file=@pizza.jpg http://127.0.0.1:8000/predict              # multipart upload
    curl --data-binary @pizza.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict   # raw bytes

Endpoints: POST /predict -> {"label", "prob", "probs", "seconds"}; POST /predict/batch (multipart,
several `files`); GET /health; the OpenAPI schema at /openapi.json and interactive docs at /docs.
Bad input gets a JSON 4xx: 400 empty upload, 413 body over the size limit, 415 not an image,
422 damaged/truncated image or missing field.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Iterator

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from going_modular.deploy.batch_predict import predict_each
from going_modular.deploy.bundle import BundleError
from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.predictor import Predicting, add_model_args, predictor_from_args

MAX_BODY_MB = 20
MAX_BATCH_FILES = 32

# The endpoints read the body themselves (to accept multipart *and* raw bytes), so the request
# body is described here for /docs and /openapi.json.
IMAGE_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
BATCH_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


class BodySizeLimit:
    """ASGI middleware: answer 413 to bodies over `max_bytes` without buffering them first.

    A declared Content-Length is checked up front; a chunked body is counted as it arrives.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"Request body is larger than the {max_bytes / 2**20:g} MB limit."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.detail)  # turned into a JSON 413 by FastAPI
            return message

        await self.app(scope, limited_receive, send)


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


def predict_or_4xx(predictor: Predicting, data: bytes, top_k: int | None) -> dict:
    """Runs in a worker thread: decoding and the forward pass are CPU-bound."""
    try:
        return predictor.predict(data, top_k=top_k)
    except InvalidImageError as e:
        raise HTTPException(error_status(e), str(e)) from e


def create_app(predictor: Predicting, max_bytes: int = MAX_BODY_MB * 2**20) -> FastAPI:
    """The FastAPI app around an already-loaded predictor (loaded once, shared by all requests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Warm up once at startup so the first real request does not pay for lazy initialisation.
        await run_in_threadpool(predictor.predict, Image.new("RGB", (224, 224)))
        app.state.predictor = predictor
        yield

    app = FastAPI(title="FoodVision", version="1.0", lifespan=lifespan,
                  description=f"Classify food photos ({', '.join(predictor.class_names)}) with "
                              f"the {predictor.arch} model.")
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)

    @app.get("/health")
    async def health() -> dict:  # async: answered on the event loop even while every worker thread is busy
        return {"status": "ok", "model": predictor.arch, "runtime": predictor.runtime,
                "classes": predictor.class_names}

    @app.post("/predict", openapi_extra=IMAGE_BODY_DOC)
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, description="keep the top k probs")) -> dict:
        """One image (multipart field `file`, or the raw body) -> {label, prob, probs, seconds}."""
        data = await read_upload(request)
        return await run_in_threadpool(predict_or_4xx, predictor, data, top_k)

    @app.post("/predict/batch", openapi_extra=BATCH_BODY_DOC)
    async def predict_batch(request: Request, top_k: int | None = Query(None, ge=1)) -> dict:
        """Several images (multipart fields `files`) in one forward pass. Each result is a
        prediction or {"error": ...}, so one bad file does not fail the others."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(415, "Send the images as multipart/form-data fields named 'files'.")
        async with request.form(max_files=MAX_BATCH_FILES) as form:
            uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            if not uploads:
                raise HTTPException(422, "Send the images as multipart file fields named 'files'.")
            files = [(upload.filename, await upload.read()) for upload in uploads]
        results = await run_in_threadpool(predict_each, predictor, [data for _, data in files], top_k)
        return {"results": [{"filename": name, **result} for (name, _), result in zip(files, results)]}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_subprocess(checkpoint: str | Path, args: tuple[str, ...] = (), startup_timeout: float = 120) -> Iterator[str]:
    """Run this module's CLI as a real server on a free 127.0.0.1 port for the duration of the
    `with` block and yield its base URL (for tests and benchmarks that need real HTTP)."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "going_modular.deploy.serve", "--checkpoint", str(checkpoint),
                                 "--port", str(port), "--log-level", "warning", *args],
                                cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout  # generous: the model loads on a busy machine
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"server did not start (exit code {proc.poll()}):\n{log.read()}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on all interfaces")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-mb", type=float, default=MAX_BODY_MB, help="largest request body accepted")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import uvicorn

    args = parse_args(argv)
    try:
        # Loaded before the server starts, so a bad checkpoint or runtime is a one-line error
        # here rather than a traceback from uvicorn's startup.
        predictor = predictor_from_args(args)
    except (BundleError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(predictor, int(args.max_mb * 2**20)), host=args.host, port=args.port,
                log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
