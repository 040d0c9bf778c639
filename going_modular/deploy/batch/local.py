"""The local engine of batch scoring: the job (job.py) scored in this process, a batch at a time."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from going_modular.deploy.batch.job import (
    check_batch_size,
    image_names,
    log_result,
    read_or_error,
    result_row,
    run_job,
)
from going_modular.deploy.monitor.log import PredictionLog
from going_modular.deploy.predictor import Predictor
from going_modular.deploy.scoring import score_sources


def score_batch(predictor: Predictor, root: Path, names: list[str], log: PredictionLog | None = None) -> list[dict]:
    """Output rows for one batch of image files (the local engine); each prediction also goes to `log`."""
    start = time.perf_counter()
    results = score_sources(predictor, [read_or_error(root / name) for name in names], stats=log is not None)
    per_image = round((time.perf_counter() - start) / len(names), 5)  # read + decode + forward share
    rows = []
    for name, result in zip(names, results, strict=True):
        result = {**result, "seconds": per_image}
        log_result(log, name, result)
        rows.append(result_row(name, result))
    return rows


def local_rows(predictor: Predictor, root: Path, batch_size: int,
               log: PredictionLog | None = None) -> Callable[[list[str]], Iterator[list[dict]]]:
    """The local engine: batches of rows, scored in this process."""
    check_batch_size(batch_size)

    def score(names: list[str]) -> Iterator[list[dict]]:
        for i in range(0, len(names), batch_size):
            yield score_batch(predictor, root, names[i:i + batch_size], log)
    return score


def score_folder(predictor: Predictor, input_dir: str | Path, output: str | Path, batch_size: int = 8,
                 progress: bool = True, log: PredictionLog | None = None) -> dict:
    """The local engine: score every image under `input_dir` not yet in `output` (see run_job)."""
    root = Path(input_dir)
    return run_job(image_names(root), output, local_rows(predictor, root, batch_size, log), progress)
