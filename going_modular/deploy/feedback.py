"""User feedback on the demo's answers ("Wrong? Tell us"): a small local dataset joined to the prediction log by id.

    store = feedback_from_env()              # $FOODVISION_FEEDBACK_DIR, default ./flagged
    store.save(prediction, "steak", class_names)   # prediction: what the demo kept of its last answer
    store.records()                          # oldest first

The folder (a dataset: one JSON line per report, one photo per report):

    flagged/feedback.jsonl                   {"time", "id", "model_id", "precision", "image", "label",
                                              "prob", "top3", "known", "ood_score", "correction"}
    flagged/images/<id>.<jpg|png|webp...>    the photo exactly as uploaded

`id` is the prediction's id, the `id` of its record in the prediction log (mode "demo"), so a report
joins its log record; `label`... `ood_score` are what the model answered; `correction` is one of the
model's class names or "not_food". Reporting the same prediction again replaces its report.

Bounded: past `max_bytes` (photos + records) or `max_records`, the OLDEST reports are dropped
(record and photo) to make room: the dataset is the latest feedback, as the prediction log keeps its
latest predictions. A single photo larger than the whole budget is refused.

Standard library + Pillow only (it runs inside the demo). One process may hold several threads
saving at once, and several processes may share the folder: every change is made under a lock file.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from going_modular.deploy.errors import UserError
from going_modular.deploy.files import write_atomic

FEEDBACK_ENV = "FOODVISION_FEEDBACK_DIR"
MAX_MB_ENV = "FOODVISION_FEEDBACK_MAX_MB"
DEFAULT_DIR = "flagged"
DEFAULT_MAX_MB = 256  # ~50-100 phone photos, thousands of small ones
DEFAULT_MAX_RECORDS = 5_000  # every report rewrites feedback.jsonl: keep that file small (~2 MB)
NOT_FOOD = "not_food"
RECORDS = "feedback.jsonl"
IMAGES = "images"
# What a report copies from the prediction it corrects (the demo's prediction-log record).
PREDICTION_FIELDS = ("id", "model_id", "precision", "label", "prob", "top3", "known", "ood_score")
PLAIN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff",
              "MPO": ".jpg"}


class FeedbackError(UserError, ValueError):
    """A report that cannot be saved (no prediction yet, an unknown dish, the photo is gone): one line says why."""


def human(name: str) -> str:
    """A class name as people write it: "ice_cream" -> "ice cream"."""
    return name.replace("_", " ")


def choices(class_names: list[str]) -> list[tuple[str, str]]:
    """The "what is it really?" menu: (shown, value) for every class, by human name, then "not food"."""
    return sorted((human(n), n) for n in class_names) + [("not food", NOT_FOOD)]


def correction_name(correction: str | None, class_names: list[str]) -> str:
    """A correction as a class name or NOT_FOOD; human spellings ("ice cream", "Not food") are accepted."""
    text = (correction or "").strip()
    if not text:
        raise FeedbackError("pick what the photo really shows (one of the dishes, or not food) before sending")
    by_name = {n.lower(): n for n in class_names} | {human(n).lower(): n for n in class_names}
    by_name |= {NOT_FOOD: NOT_FOOD, human(NOT_FOOD): NOT_FOOD}
    try:
        return by_name[text.lower()]
    except KeyError:
        raise FeedbackError(f"unknown dish {text!r}: pick one of the model's {len(class_names)} dishes "
                            f"or {human(NOT_FOOD)}") from None


def image_bytes(image) -> tuple[bytes, str]:
    """(bytes to store, file extension) of a predicted image: an upload's file (kept byte for byte),
    its bytes, a PIL image or an RGB array (both saved as PNG)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    if isinstance(image, (str, os.PathLike)):
        try:
            data = Path(image).read_bytes()
        except OSError:
            raise FeedbackError("the photo is no longer on the server (uploads are kept for 10 minutes): "
                                "predict it again, then send the feedback") from None
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        raise FeedbackError(f"cannot store a photo given as {type(image).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
    except Exception:  # the prediction refused it already; nothing to learn from it
        raise FeedbackError("the photo is not an image we can read: nothing to save") from None
    return data, EXTENSIONS.get(fmt, ".img")


class FeedbackStore:
    """The feedback dataset in `root` (module docstring), bounded by `max_bytes` and `max_records`."""

    def __init__(self, root: str | os.PathLike = DEFAULT_DIR, max_bytes: int = DEFAULT_MAX_MB * 2**20,
                 max_records: int = DEFAULT_MAX_RECORDS):
        if max_bytes < 1 or max_records < 1:
            raise ValueError("FeedbackStore needs max_bytes >= 1 and max_records >= 1")
        self.root = Path(root)
        self.max_bytes, self.max_records = max_bytes, max_records

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.root)!r})"

    @property
    def records_path(self) -> Path:
        return self.root / RECORDS

    def records(self) -> list[dict]:
        """Every saved report, oldest first (a torn or foreign line is skipped)."""
        try:
            lines = self.records_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record and "correction" in record:
                records.append(record)
        return records

    def size(self) -> int:
        """Bytes the dataset holds: its records and its photos."""
        files = [self.records_path, *(self.root / IMAGES).glob("*")]
        return sum(f.stat().st_size for f in files if f.is_file())

    def save(self, prediction: dict | None, correction: str | None, class_names: list[str],
             when: float | None = None) -> dict:
        """Save one report: the photo and what the model said (`prediction`: the demo's last answer,
        {"image": the photo, **its prediction-log record}) with the user's `correction`.

        Returns the saved record. Raises FeedbackError for no prediction, an unknown correction or
        a photo that cannot be stored.
        """
        if not prediction or prediction.get("id") is None or prediction.get("image") is None:
            raise FeedbackError("there is no prediction to correct yet: predict a photo first")
        name = correction_name(correction, class_names)
        data, ext = image_bytes(prediction["image"])
        moment = datetime.fromtimestamp(time.time() if when is None else when, timezone.utc)
        pid = str(prediction["id"])
        if not PLAIN_ID.fullmatch(pid):  # the id names the photo's file: never a path
            raise FeedbackError(f"prediction id {pid!r} is not a plain id")
        image_rel = f"{IMAGES}/{pid}{ext}"
        record = {"time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  **{k: prediction.get(k) for k in PREDICTION_FIELDS}, "image": image_rel, "correction": name}
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        if len(data) + len(line) > self.max_bytes:
            raise FeedbackError(f"the photo ({len(data) / 2**20:.1f} MB) is larger than the feedback folder's "
                                f"whole budget ({self.max_bytes / 2**20:.1f} MB): not saved")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / IMAGES).mkdir(exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # per open file: serialises threads and processes alike
            try:
                kept = []
                for old in self.records():
                    if old["id"] == record["id"]:  # a new report of the same prediction replaces the old one
                        self._delete_image(old)
                    else:
                        kept.append(old)
                kept = self._make_room(kept, len(data) + len(line))
                write_atomic(self.root / image_rel, lambda tmp: tmp.write_bytes(data))
                lines = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in kept) + line
                write_atomic(self.records_path, lambda tmp: tmp.write_text(lines))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return record

    def _make_room(self, records: list[dict], incoming: int) -> list[dict]:
        """Drop the oldest reports (and their photos) until `incoming` more bytes and one more record fit."""
        def cost(r: dict) -> int:
            photo = self.root / str(r.get("image", ""))
            line = len(json.dumps(r, separators=(",", ":"), default=str)) + 1
            return line + (photo.stat().st_size if photo.is_file() else 0)

        costs = [cost(r) for r in records]
        total = sum(costs)
        drop = 0
        while drop < len(records) and (total + incoming > self.max_bytes or len(records) - drop + 1 > self.max_records):
            total -= costs[drop]
            self._delete_image(records[drop])
            drop += 1
        return records[drop:]

    def _delete_image(self, record: dict) -> None:
        image = record.get("image")
        if image and Path(image).parent.name == IMAGES and ".." not in Path(image).parts:
            (self.root / image).unlink(missing_ok=True)


def feedback_from_env(env=None) -> FeedbackStore:
    """The demo's feedback store: $FOODVISION_FEEDBACK_DIR (default ./flagged), bounded by
    $FOODVISION_FEEDBACK_MAX_MB (default 256)."""
    env = os.environ if env is None else env
    root = env.get(FEEDBACK_ENV, "").strip() or DEFAULT_DIR
    raw = env.get(MAX_MB_ENV, "").strip()
    try:
        max_mb = float(raw) if raw else DEFAULT_MAX_MB
    except ValueError:
        raise FeedbackError(f"{MAX_MB_ENV}={raw!r} is not a number of megabytes") from None
    if max_mb <= 0:
        raise FeedbackError(f"{MAX_MB_ENV} must be positive, got {raw}")
    return FeedbackStore(root, max_bytes=int(max_mb * 2**20))
