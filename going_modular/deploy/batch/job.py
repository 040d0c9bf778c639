"""The resumable batch-scoring job both engines share (local.py, ray_engine.py): the CSV's columns
and cell escaping, the input listing, the journal, the single-writer lock and `run_job`.

Rows are `path,label,prob,top3,known,seconds,model_id,precision,error` with `path` relative to the
input folder; model_id and precision say which bundle scored the row.

What a run guarantees, whichever engine scores:
- Resumable: images already in the output are skipped, so a re-run after a crash, a kill -9 or
  Ctrl-C only scores what is missing. Finished rows are appended to OUTPUT.journal (one JSON
  object a line, fsync'ed every batch) and the journal is never truncated: it is deleted only
  after its rows were published into the output. A torn or foreign journal line is skipped with
  a warning.
- Never half-written: the output is only ever replaced whole (write a temporary file, os.replace).
- Single writer: a run holds an exclusive lock (OUTPUT.lock) from start to end; a second run on
  the same output stops at once with a clear message instead of interleaving rows.
- Any file name: a name that is not UTF-8, or holds a newline, is scored and written escaped
  (backslash escapes, as Python writes them: `\\xff`, `\\n`, `\\\\`), and a cell a spreadsheet
  would run as a formula (`= + - @`, tab, CR first) starts with `'` (OWASP's advice on CSV
  injection). Reading the CSV back undoes both, so resuming recognises every row.
- An unreadable image (corrupt, empty, truncated, permission denied) becomes a row with `error`
  filled in, in words and without the machine's absolute paths; the run goes on.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace

from going_modular.deploy.errors import UserError
from going_modular.deploy.files import write_atomic
from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.monitor.log import PredictionLog, prediction_record
from going_modular.deploy.scoring import find_images, one_line

# The output's columns, in order; every other part of this module follows this list, so a new
# column that predictors report (a key of their result dict) is a one-line change here.
FIELDS = ["path", "label", "prob", "top3", "known", "seconds", "model_id", "precision", "error"]
# The columns of outputs written before rows named their model: still resumed (their rows keep an
# empty model_id, as nobody recorded which model scored them) and rewritten with FIELDS.
LEGACY_FIELDS = [f for f in FIELDS if f not in ("model_id", "precision")]
# A file bigger than this is not read into memory: no photo of food is 256 MB.
MAX_FILE_BYTES = 256 * 1024 * 1024
# Cells starting with these run as formulas in spreadsheets (OWASP "CSV injection"); "'" itself is
# prefixed too so that removing one leading "'" on reading is exact.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
# Characters of a name that are escaped in its CSV cell: the escape character, control characters
# (a newline would split the row for line-based tools) and bytes that are not UTF-8 (which Python
# keeps as lone surrogates U+DC80..U+DCFF, PEP 383).
NAME_SPECIALS = re.compile("[\\\\\x00-\x1f\x7f\udc80-\udcff]")
NAME_ESCAPES = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2})")
SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
log = logging.getLogger(__name__)


class BatchError(UserError, RuntimeError):
    """The input folder or output file cannot be used; the message says why."""


# --- file names -> CSV cells and back -------------------------------------------------------

def escape_text(text: str) -> str:
    """A name (or any cell) as printable UTF-8 text: '\\', control characters and non-UTF-8 bytes escaped."""
    def escape(match: re.Match) -> str:
        ch = match.group()
        if ch in SHORT_ESCAPES:
            return SHORT_ESCAPES[ch]
        code = ord(ch)
        return f"\\x{code - 0xDC00 if code >= 0xDC00 else code:02x}"
    return NAME_SPECIALS.sub(escape, text)


def unescape_text(text: str) -> str:
    """The inverse of escape_text (bytes >= 0x80 come back as the surrogates os.fsencode turns into bytes)."""
    def unescape(match: re.Match) -> str:
        code = match.group(1)
        if not code.startswith("x"):
            return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[code]
        value = int(code[1:], 16)
        return chr(value if value < 0x80 else 0xDC00 + value)
    return NAME_ESCAPES.sub(unescape, text)


def neutralise(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def unneutralise(cell: str) -> str:
    return cell.removeprefix("'")


def csv_cells(row: dict) -> dict:
    """A row as written to the CSV: every cell escaped (one line a row, valid UTF-8) and safe to
    open in a spreadsheet. The path needs it; the other cells get it too, so that no error
    message can ever break the file."""
    return {f: neutralise(escape_text(str(row[f]))) for f in FIELDS}


def row_from_cells(cells: dict) -> dict:
    """The inverse of csv_cells."""
    return {f: unescape_text(unneutralise(cells[f])) for f in FIELDS}


# --- the input --------------------------------------------------------------------------------

def image_names(root: Path) -> list[str]:
    """find_images as relative POSIX names: the keys of the output's `path` column."""
    return [p.relative_to(root).as_posix() for p in find_images(root)]


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of one image file. An unreadable file raises InvalidImageError saying why in
    words (e.g. "Permission denied"), never with the absolute path: rows travel further than the
    layout of the machine that scored them should."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise InvalidImageError(f"The file is too large ({size / 2**20:.0f} MB); "
                                        f"the limit is {MAX_FILE_BYTES // 2**20} MB.")
            data = f.read()
    except OSError as e:
        raise InvalidImageError(f"The file cannot be read: {e.strerror or type(e).__name__}.") from e
    if not data:
        raise InvalidImageError("The file is empty.")
    return data


# --- the output: journal, lock, publish -------------------------------------------------------

def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal")


def read_output(path: Path) -> list[dict]:
    """Rows of a CSV we wrote earlier (names unescaped); a malformed row is skipped with a warning."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:  # newline="": a "\r" in a cell stays a "\r"
            reader = csv.DictReader(f)
            if reader.fieldnames not in (None, FIELDS, LEGACY_FIELDS):
                raise BatchError(f"{path} exists but is not a batch_predict CSV (columns {reader.fieldnames}); "
                                 f"choose another --output")
            cells = list(reader)
    except UnicodeDecodeError as e:
        raise BatchError(f"{path} exists but is not a batch_predict CSV (not UTF-8 text); "
                         f"choose another --output") from e
    good = [c for c in cells if None not in c and None not in c.values()]
    if len(good) < len(cells):
        log.warning("%s: skipped %d malformed row(s); their images will be scored again", path, len(cells) - len(good))
    return [row_from_cells({f: c.get(f, "") for f in FIELDS}) for c in good]


def journal_row(line: bytes) -> dict | None:
    """The row a journal line holds, or None for a line torn by a kill (or not ours)."""
    try:
        row = json.loads(line)
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str):
        return None
    return {f: str(row.get(f, "")) for f in FIELDS}


def read_journal(path: Path) -> list[dict]:
    """Rows of a journal; a line that is not a complete row is skipped with a warning."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    rows = [row for row in map(journal_row, lines) if row is not None]
    if len(rows) < len(lines):
        log.warning("%s: skipped %d malformed line(s); their images will be scored again", path, len(lines) - len(rows))
    return rows


def append_journal(path: Path, rows: list[dict]) -> None:
    """Append rows and fsync: a crash loses at most the batch in flight, never earlier rows."""
    with open(path, "ab") as f:
        if f.tell() and not _ends_with_newline(path):
            f.write(b"\n")  # a line torn by a kill stays a line of its own (skipped when read)
        # ensure_ascii: a name's non-UTF-8 bytes (lone surrogates) are written as \\udcXX escapes
        f.write(b"".join(json.dumps(row).encode() + b"\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def publish(output: Path, rows: Iterable[dict]) -> None:
    """Replace `output` whole with `rows` (atomic: readers see the old file or the new one)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(csv_cells(row) for row in rows)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a crash leaves the old file or this one

    write_atomic(output, write)


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on `output` (via OUTPUT.lock) or raise BatchError at once.

    A run takes it once, before anything slow (loading a model, starting Ray), so a second run on
    the same output stops at once. The lock file is left in place: deleting it would let a third
    run lock a new file while a second still holds the old one. The kernel releases the lock when
    the process dies.
    """
    import fcntl  # POSIX only; imported here so that importing this module works anywhere

    lock = output.with_name(output.name + ".lock")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise BatchError(f"cannot write {output}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BatchError(f"another batch_predict run is writing {output} (it holds {lock.name}); "
                         f"wait for it to finish or choose another --output") from None
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise BatchError(f"batch size must be at least 1, got {batch_size}")
    return batch_size


# --- scoring ----------------------------------------------------------------------------------

def format_top3(probs: dict) -> str:
    """'pizza:0.9803;sushi:0.0171;steak:0.0025' (probs is already sorted, highest first)."""
    return ";".join(f"{name}:{p:.4f}" for name, p in list(probs.items())[:3])


def result_row(name: str, result: dict) -> dict:
    """One output row from a prediction, or from {"error": message}. Columns other than the
    formatted ones are the result's keys of the same name, so a new key only needs a FIELDS entry."""
    if result.get("error"):
        return {**dict.fromkeys(FIELDS, ""), "path": name, "error": result["error"]}
    row = {f: result.get(f, "") for f in FIELDS}
    row.update(path=name, prob=f"{result['prob']:.4f}", top3=format_top3(result["probs"]), error="")
    return row


def log_result(log: PredictionLog | None, name: str, result: dict) -> None:
    """One prediction log record for a scored row (from `score_sources(..., stats=True)`); the
    result names its model, so a Ray driver that holds no predictor logs what its actors scored."""
    if log is not None and not result.get("error"):
        model = SimpleNamespace(model_id=result.get("model_id"), precision=result.get("precision"))
        log.write(prediction_record(model, result, result.get("image"), mode="batch", id=name))


def read_or_error(path: str | os.PathLike) -> bytes | str:
    """A file's bytes, or why it cannot be read (read_image_file's message)."""
    try:
        return read_image_file(path)
    except InvalidImageError as e:
        return one_line(e)


def run_job(names: list[str], output: str | Path, score: Callable[[list[str]], Iterator[list[dict]]],
            progress: bool = True) -> dict:
    """Score the `names` not yet in `output` with an engine's `score(todo)` (yielding lists of
    rows, in any order) under the single-writer lock, journalling every batch; returns the summary
    {"total", "skipped", "scored", "errors", "seconds", "images_per_s", "output"}."""
    with output_lock(Path(output)):
        return run_locked_job(names, output, score, progress)


def run_locked_job(names: list[str], output: str | Path, score: Callable[[list[str]], Iterator[list[dict]]],
                   progress: bool = True) -> dict:
    """run_job for a caller that already holds output_lock(output) (taken before loading a model
    or starting Ray, so that a second run stops before doing anything slow)."""
    from tqdm.auto import tqdm

    output = Path(output)
    journal = journal_path(output)
    done: dict[str, dict] = {}
    for row in read_output(output) + read_journal(journal):
        done.setdefault(row["path"], row)
    todo = [name for name in names if name not in done]
    summary = {"total": len(names), "skipped": len(names) - len(todo), "scored": 0, "errors": 0,
               "seconds": 0.0, "images_per_s": 0.0, "output": str(output)}
    if not todo and not journal.exists():
        return summary
    new: list[dict] = []
    start = time.perf_counter()
    try:
        with tqdm(total=len(todo), desc="scoring", unit="img", disable=not progress) as bar:
            for rows in score(todo) if todo else ():
                append_journal(journal, rows)
                new += rows
                summary["scored"] += len(rows)
                summary["errors"] += sum(bool(r["error"]) for r in rows)
                bar.update(len(rows))
    finally:
        # Also on Ctrl-C or an engine failure: every journalled row is complete, so publish
        # them (the next run resumes after them), and only then drop the journal.
        publish(output, [*done.values(), *new])
        journal.unlink(missing_ok=True)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        summary["images_per_s"] = round(summary["scored"] / max(summary["seconds"], 1e-9), 2)
    return summary


