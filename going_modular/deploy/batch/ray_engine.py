"""The Ray engine of batch scoring: the same job as the local engine, on Ray Data.

    python -m going_modular.deploy.batch --input photos/ --output p.csv --engine ray [--actors N]
    python -m going_modular.deploy.batch --input s3://bucket/photos --output p.csv \\
        --engine ray --address ray://head:10001

The pipeline: list files (in the driver, which also skips what the output already holds) ->
read files in Ray tasks (local paths or any URI pyarrow reads) -> decode, preprocess and predict
in a pool of actors, each holding one serving predictor (`load_predictor(bundle)`) and scoring a
batch with the local engine's own `score_sources`, so rows cannot differ from the local engine's
or from any other mode's (decoding stays inside the predictor, where every mode does it) -> rows
back to the driver, which journals and publishes them exactly as the local engine does
(job.run_job): same CSV, same resume, same single-writer lock.

Without --address, Ray starts on this machine for the run and stops after it. The model file
travels through Ray's object store, so cluster nodes need no copy of it; the input must be
readable from every node (a shared folder, or a URI such as s3://, gs://, which pyarrow reads).

Sizing: the read tasks keep a tenth of the cluster's CPUs (at least one: reading is mostly waiting
on storage) and the actors share the rest, at most one CPU each. Reserving every CPU for actors
deadlocks: the tasks that feed them can never be scheduled (2 actors x 1 CPU on 2 CPUs hangs).

This module imports Ray only when a job runs: nothing else in the serving wing pays for it.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from going_modular.deploy.batch.job import (
    BatchError,
    check_batch_size,
    image_names,
    log_result,
    output_lock,
    read_or_error,
    result_row,
    run_locked_job,
)
from going_modular.deploy.image import IMAGE_SUFFIXES
from going_modular.deploy.monitor.log import PredictionLog
from going_modular.deploy.predictor import load_predictor
from going_modular.deploy.scoring import score_sources

# The package folder Ray ships to cluster workers (going_modular/, three levels up from here).
PACKAGE_DIR = Path(__file__).resolve().parents[2]
# Local Ray: a small object store (images stream through it a few batches at a time) and no dashboard.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
# CPUs kept free of actors for the read tasks (the anti-deadlock reserve): a share of the cluster,
# at least READ_CPUS. A read task takes half a CPU: it mostly waits on storage.
READ_CPUS = 1.0
READ_SHARE = 0.1
READ_TASK_CPUS = 0.5
# Memory a read task reserves (Ray Data measured ~150 MB per read worker: the process, its
# imports and a batch of files). Being a task-only
# reservation it also keeps Ray from fusing reading into the actors, so files are read while the
# actors compute instead of in turn with them.
READ_TASK_MEMORY = 256 * 1024 * 1024


def is_uri(source: str | os.PathLike) -> bool:
    return "://" in str(source)


def list_uri(uri: str) -> list[str]:
    """Image files under a pyarrow filesystem URI, as names relative to it (sorted)."""
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    names = sorted(info.path[len(base):].lstrip("/") for info in infos
                   if info.type == fs.FileType.File and Path(info.path).suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise BatchError(f"no images found under {uri} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return names


def read_uri_or_error(uri: str) -> bytes | str:
    """read_or_error for a file behind a pyarrow URI."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as f:
            data = f.read()
    except OSError as e:  # pyarrow's errors name the bucket/path; keep only the kind
        return f"The file cannot be read: {type(e).__name__}."
    return data or "The file is empty."


def read_batch(batch: dict, source: str) -> dict:
    """Ray task: read one batch of files. Column `name` holds each name's bytes (os.fsencode:
    Arrow strings must be UTF-8, file names need not be); out come `data` (the file's bytes, empty
    for an unreadable file), `error` (why it is unreadable) and `seconds` (read time)."""
    datas, errors, seconds = [], [], []
    for raw in batch["name"]:
        start = time.perf_counter()
        path = f"{source.rstrip('/')}/{os.fsdecode(bytes(raw))}"
        data = read_uri_or_error(path) if is_uri(source) else read_or_error(path)
        datas.append(data if isinstance(data, bytes) else b"")
        errors.append("" if isinstance(data, bytes) else data)
        seconds.append(time.perf_counter() - start)
    return {"name": batch["name"], "data": np.array(datas, dtype=object), "error": np.array(errors, dtype=object),
            "seconds": np.array(seconds)}


class PredictActor:
    """Ray actor: one serving predictor, loaded once from the bundle's bytes, scoring batches with
    the local engine's own score_sources (decode, preprocess, one forward pass)."""

    def __init__(self, model_ref, suffix: str, num_threads: int, stats: bool = False):
        import ray

        model = ray.get(model_ref)
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
            f.write(model)
        self.predictor = load_predictor(f.name, num_threads=num_threads)
        self.stats = stats  # the driver writes a prediction log: results carry image statistics
        os.unlink(f.name)

    def __call__(self, batch: dict) -> dict:
        """Results as JSON, one per file: every key the predictor reports passes through to the driver."""
        import json

        start = time.perf_counter()
        sources = [error or bytes(data) for data, error in zip(batch["data"], batch["error"], strict=True)]
        results = score_sources(self.predictor, sources, stats=self.stats)
        share = (time.perf_counter() - start) / len(sources)
        texts = [json.dumps(result if result.get("error") else {**result, "seconds": round(read + share, 5)})
                 for result, read in zip(results, batch["seconds"], strict=True)]
        return {"name": batch["name"], "result": np.array(texts, dtype=object)}


def start_ray(address: str | None):
    """Connect to `address` or start Ray on this machine; returns a function that undoes it."""
    import ray

    if ray.is_initialized():  # a notebook or test session that already started Ray keeps it
        return lambda: None
    if address:
        # Cluster workers get this package (not the model: it travels through the object store),
        # by folder: importing `going_modular` here would be the serving wing importing the training wing.
        ray.init(address=address, runtime_env={"py_modules": [str(PACKAGE_DIR)]}, log_to_driver=False)
    else:
        ray.init(object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    return ray.shutdown


def read_reserve(cpus: float) -> float:
    """CPUs left to the read tasks: a tenth of the cluster, at least one (half of a 1-CPU machine)."""
    return min(max(READ_CPUS, READ_SHARE * cpus), cpus / 2)


def pool_size(cpus: float, actors: int | None) -> tuple[int, float]:
    """(actors, CPUs each): by default one actor per CPU beyond the read reserve, and never more
    actor CPUs than the reserve leaves, so the read tasks always get scheduled."""
    for_actors = cpus - read_reserve(cpus)
    if actors is None:
        actors = max(1, int(for_actors))
    if actors < 1:
        raise BatchError(f"--actors must be at least 1, got {actors}")
    return actors, min(1.0, for_actors / actors)


def ray_rows(model: Path, source: str, actors: int | None, batch_size: int, num_threads: int | None,
             log: PredictionLog | None = None):
    """The Ray engine as run_job wants it: score(todo) yields lists of rows as actors finish them.
    The driver writes the prediction log from the actors' results (one writer, on this machine)."""
    import json

    import ray

    def score(names: list[str]):
        actor_count, actor_cpus = pool_size(ray.cluster_resources().get("CPU", 1.0), actors)
        model_ref = ray.put(model.read_bytes())
        items = [{"name": os.fsencode(name)} for name in names]
        ds = (ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size, 64)))
              .map_batches(read_batch, fn_kwargs={"source": str(source)}, batch_size=batch_size,
                           num_cpus=READ_TASK_CPUS, memory=READ_TASK_MEMORY, batch_format="numpy")
              .map_batches(PredictActor, fn_constructor_args=(model_ref, model.suffix, num_threads or 1,
                                                             log is not None),
                           batch_size=batch_size, num_cpus=actor_cpus, batch_format="numpy",
                           compute=ray.data.ActorPoolStrategy(size=actor_count)))
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = []
            for raw, text in zip(batch["name"], batch["result"], strict=True):
                name, result = os.fsdecode(bytes(raw)), json.loads(text)
                log_result(log, name, result)
                rows.append(result_row(name, result))
            yield rows

    return score


def score_folder_ray(model: str | os.PathLike, input_dir: str | os.PathLike, output: str | os.PathLike,
                     actors: int | None = None, address: str | None = None, batch_size: int = 8,
                     num_threads: int | None = None, progress: bool = True, log: PredictionLog | None = None) -> dict:
    """Score every image under `input_dir` (a folder or a pyarrow URI) not yet in `output` on Ray;
    the same rows and summary as local.score_folder. Starts Ray on this machine unless
    it is already running or `address` names a cluster; stops only a Ray it started."""
    import ray

    check_batch_size(batch_size)
    model = Path(model)
    if not model.is_file():
        raise BatchError(f"model file not found: {model}")
    names = list_uri(str(input_dir)) if is_uri(input_dir) else image_names(Path(input_dir))
    with output_lock(Path(output)):  # before starting Ray: a second run on this output stops at once
        stop = start_ray(address)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False  # run_job draws the one bar
            return run_locked_job(names, output, ray_rows(model, str(input_dir), actors, batch_size, num_threads, log),
                                  progress)
        finally:
            stop()
