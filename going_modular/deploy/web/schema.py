"""The web service's contract: response bodies as they appear in /openapi.json, the one error body,
and the request bodies the endpoints read themselves."""
from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

RETRY_AFTER_S = 1
RETRY_HEADERS = {"Retry-After": str(RETRY_AFTER_S)}  # on every 503


class Error(BaseModel):
    """The one error body of every non-2xx answer."""
    detail: str


class Prediction(BaseModel):
    # Later result keys (e.g. OOD scores) pass through; model_id is a field name, not pydantic's namespace.
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    label: str
    prob: float
    probs: dict[str, float]
    seconds: float
    model_id: str  # which bundle answered (its sha256 prefix, bundle.model_id)
    precision: str  # "int8" or "fp32"
    request_id: str  # also the X-Request-ID header, and the id of this prediction in the prediction log


class BatchItem(BaseModel):
    """A prediction for one file, or {"filename", "error"} when that file is not a usable image."""
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    filename: str | None = None
    label: str | None = None
    prob: float | None = None
    probs: dict[str, float] | None = None
    seconds: float | None = None
    model_id: str | None = None
    precision: str | None = None
    id: str | None = None  # this file's id in the prediction log: REQUEST_ID/INDEX
    error: str | None = None


class BatchResult(BaseModel):
    request_id: str
    results: list[BatchItem]


class Live(BaseModel):
    status: str
    model: str
    runtime: str
    classes: list[str]


class Ready(Live):
    model_config = ConfigDict(protected_namespaces=())
    bundle: str
    model_id: str
    precision: str
    pid: int
    batching: dict[str, int | float]
    prediction_log: dict | None  # PredictionLog.status() (ok False while its writes fail); null: no log


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


def error_response(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(Error(detail=detail).model_dump(), status_code=status, headers=headers)
