"""File helpers both wings share: one atomic write and one sha256 (no torch, standard library only)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call write(tmp), then rename tmp onto `path`: readers (other processes) see the old file or
    the new one, never half of one. The temporary name carries the process id, so two writers never
    share it, and it is removed when `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256sum(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read a MB at a time (a dataset zip need not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
