"""Settings the notebooks share: where things live and the fast (CI) mode; the committed stats of a
full run and the deployment rule (notebook 06); the `check_...` helpers of the exercises.

`FOODVISION_FAST=1` runs every notebook's real code path on a few batches for one epoch, so CI
can execute all of them in minutes; without it you get the full learner run. Paths are relative
to the repository root, where each notebook's first cell moves the kernel.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

from going_modular.data_setup import COURSE_DATA_URL, download_data, take_batches
from going_modular.model_builder import REGISTRY, WeightsUnavailableError, create_model
from going_modular.utils import get_device

DATA_DIR = Path("data")
FAST = os.environ.get("FOODVISION_FAST", "0") == "1"
# Fast mode (CI, `make test`) keeps its models and stats apart, so a test run never replaces the
# full-run results that notebook 06 compares.
MODELS_DIR = Path("models") / "fast" if FAST else Path("models")
EPOCHS = 1 if FAST else 10
BATCH_SIZE = 8 if FAST else 32
FAST_BATCHES = 2  # batches of data per split in fast mode, and for an untrained backbone
MAX_BATCHES = FAST_BATCHES if FAST else None
SEED = 42
# One device for training, evaluation and prediction: the GPU when there is one (Colab), else the CPU;
# $FOODVISION_DEVICE overrides it. Speed is always measured on the CPU, the device we deploy to.
DEVICE = get_device(os.environ.get("FOODVISION_DEVICE") or None)


def fast(dataloader, untrained: bool = False):
    """The same loader over FAST_BATCHES batches of its data in fast mode, or for an untrained backbone
    (offline: its numbers time the code and teach nothing); otherwise the loader itself."""
    return take_batches(dataloader, FAST_BATCHES if FAST or untrained else None, SEED)


def get_course_data() -> Path:
    """pizza_steak_sushi_20_percent under data/ (course URL, or $FOODVISION_DATA_MIRROR offline)."""
    return download_data(COURSE_DATA_URL, "pizza_steak_sushi_20_percent", data_dir=DATA_DIR)


def pretrained_or_untrained(build: str | Callable, num_classes: int, seed: int = SEED):
    """(model, transforms, pretrained): ImageNet weights, or, when they cannot be downloaded, random ones.

    `build` is a registered name (`create_model(name, ...)`) or a builder taking the course's keywords
    and `weights`, such as `create_effnetb2_model`. Numbers from a random backbone are not results.
    Offline the notebook says so in one line and goes on with the untrained model for one epoch of a
    few batches (`fast(loader, untrained=True)`): its speed and size are real, and notebook 06 puts
    the course's published accuracy beside them.
    """
    if not callable(build):
        build = functools.partial(create_model, build)
    try:
        model, transforms = build(num_classes=num_classes, seed=seed, weights="DEFAULT")
        return model, transforms, True
    except WeightsUnavailableError as e:
        print(f"[OFFLINE] {e} Continuing UNTRAINED, for speed and size only: no number below is a result; "
              "notebook 06 shows the course's published accuracy instead.")
        model, transforms = build(num_classes=num_classes, seed=seed, weights=None)
        return model, transforms, False


def save_stats(name: str, stats: dict) -> Path:
    """models/<name>_stats.json: what the comparison notebook tabulates."""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    path = MODELS_DIR / f"{name}_stats.json"
    path.write_text(json.dumps(stats, indent=2))
    return path


def load_stats() -> dict:
    """{model name: stats} for every model a notebook has trained and saved."""
    return {p.name.removesuffix("_stats.json"): json.loads(p.read_text())
            for p in sorted(MODELS_DIR.glob("*_stats.json"))}


# --- results shipped with the repository ---------------------------------------------------------
# One full run of notebooks 02-05, committed, so notebook 06 (and its exercises) works in a fresh clone
# that has not trained anything. `publish_full_run_stats()` rewrites it from a full run's models/.
FULL_RUN_STATS = Path(__file__).resolve().parents[1] / "notebooks" / "full_run_stats.json"
FULL_RUN_ABOUT = ("Stats of one full (not fast) run of notebooks 02-05, committed so that notebook 06 runs "
                  "in a fresh clone. Times are seconds per prediction on the CPU of the machine named below; "
                  "rows with pretrained false had no ImageNet weights (offline): their accuracy is not a result.")


def publish_full_run_stats(machine: str, path: str | os.PathLike = FULL_RUN_STATS) -> Path:
    """Write the stats of this checkout's full run (models/*_stats.json) to the committed file."""
    if FAST:
        raise RuntimeError("fast mode: its stats come from one small epoch; publish a full run's stats")
    stats = load_stats()
    if not stats:
        raise RuntimeError(f"no stats under {MODELS_DIR}/: run notebooks 02-05 in full mode first")
    path = Path(path)
    path.write_text(json.dumps({"about": FULL_RUN_ABOUT, "machine": machine, "models": stats},
                               indent=2, sort_keys=True) + "\n")
    return path


def load_full_run_stats(path: str | os.PathLike = FULL_RUN_STATS) -> dict:
    """{model name: stats} of the committed full run (see `FULL_RUN_STATS`)."""
    return json.loads(Path(path).read_text())["models"]


# --- the deployment rule of notebook 06 ----------------------------------------------------------
ACCURACY_GOAL = 0.95
SECONDS_GOAL = 0.03  # real time: 30+ predictions per second on a CPU


def meets_goal(row, accuracy_goal: float = ACCURACY_GOAL, seconds_goal: float = SECONDS_GOAL) -> bool:
    """A pretrained model at least `accuracy_goal` accurate and at most `seconds_goal` per prediction."""
    return bool(row["pretrained"]) and row["test_acc"] >= accuracy_goal and row["time_per_pred_cpu"] <= seconds_goal


def pick_model(stats: dict, accuracy_goal: float = ACCURACY_GOAL, seconds_goal: float = SECONDS_GOAL) -> str | None:
    """The model to deploy: among those meeting the goal the most accurate, the faster on a tie; None if none."""
    candidates = [name for name, row in stats.items() if meets_goal(row, accuracy_goal, seconds_goal)]
    return min(candidates, key=lambda n: (-stats[n]["test_acc"], stats[n]["time_per_pred_cpu"]), default=None)


# --- checks for the exercises: each prints one line, right or not yet, and returns True/False -------

def _verdict(ok: bool, right: str, wrong: str) -> bool:
    print(f"right: {right}" if ok else f"not yet: {wrong}")
    return ok


def _unanswered(answer) -> bool:
    """The exercise cells start with `...` as the answer: say so instead of judging it."""
    if answer is ...:
        print("not yet: replace ... with your answer")
    return answer is ...


def check_trainable_parameters(name: str, num_classes: int, answer: int) -> bool:
    """Exercise: how many parameters does the new head of `name` train for `num_classes` classes?
    (A linear layer from the backbone's features to the classes: weights plus one bias per class.)"""
    if _unanswered(answer):
        return False
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    features = REGISTRY[name].features
    truth = features * num_classes + num_classes
    return _verdict(answer == truth, f"{name}'s head trains {truth:,} parameters for {num_classes} classes",
                    f"{answer:,} is not it: the head maps {features} features to {num_classes} classes "
                    "(count the weights and the biases)")


def check_class_counts(split_dir: str | os.PathLike, answer: dict) -> bool:
    """Exercise: how many images of each class are in this split? `answer` is {class: count}."""
    if _unanswered(answer):
        return False
    split = Path(split_dir)
    truth = {d.name: sum(1 for p in d.iterdir() if p.is_file()) for d in sorted(split.iterdir()) if d.is_dir()}
    wrong = sorted(k for k in truth.keys() | answer.keys() if truth.get(k) != answer.get(k))
    return _verdict(not wrong, f"{split.name}: {truth}", f"these classes are off: {', '.join(map(str, wrong))}")


def check_meets_goal(fn) -> bool:
    """Exercise: `fn(accuracy, seconds_per_prediction) -> bool` says whether a model meets the course's
    goal (95%+ accuracy and real time, at most 0.03 s per prediction). Tried on the edge cases."""
    cases = [((0.95, 0.03), True), ((0.9499, 0.01), False), ((0.99, 0.0301), False), ((0.973, 0.0066), True),
             ((0.5, 0.25), False), ((1.0, 0.0), True)]
    failed = [(args, want) for args, want in cases if bool(fn(*args)) != want]
    return _verdict(not failed, f"all {len(cases)} cases, edges included",
                    "; ".join(f"fn{args} should be {want}" for args, want in failed))


def check_pick(answer: str | None, accuracy_goal: float = ACCURACY_GOAL, seconds_goal: float = SECONDS_GOAL,
               stats: dict | None = None) -> bool:
    """Exercise: which model would you deploy for these goals? (None: no model meets them.) Judged on the
    committed full-run stats unless `stats` is given."""
    if _unanswered(answer):
        return False
    stats = load_full_run_stats() if stats is None else stats
    truth = pick_model(stats, accuracy_goal, seconds_goal)
    goal = f"{accuracy_goal:.0%}+ accuracy, at most {seconds_goal * 1000:g} ms"
    return _verdict(answer == truth, f"{truth} for {goal}",
                    f"{answer} is not the pick for {goal}: keep only pretrained models meeting both, then the "
                    "most accurate, then the fastest")


def check_not_sure(fn, threshold: float = 0.5) -> bool:
    """Exercise: `fn(probs) -> str`, probs being {class: probability}, returns the top class, or
    "not sure" when the top probability is below `threshold` (at the threshold it answers)."""
    cases = [({"pizza": 0.9, "steak": 0.06, "sushi": 0.04}, "pizza"),
             ({"pizza": 0.4, "steak": 0.35, "sushi": 0.25}, "not sure"),
             ({"pizza": 0.2, "steak": 0.3, "sushi": 0.5}, "sushi"),
             ({"pizza": 0.3, "steak": 0.49, "sushi": 0.21}, "not sure")]
    cases = [(probs, want if max(probs.values()) >= threshold else "not sure") for probs, want in cases]
    failed = [(probs, want) for probs, want in cases if fn(probs) != want]
    return _verdict(not failed, f"all {len(cases)} cases (threshold {threshold:.0%})",
                    "; ".join(f"fn({probs}) should be {want!r}" for probs, want in failed))


def check_cluster_cpus(answer: int, images: int, seconds: float, images_per_cpu: float) -> bool:
    """Exercise: the fewest CPUs of a Ray cluster that scores `images` in `seconds`, when one actor CPU
    scores `images_per_cpu` per second and the read tasks keep their share (batch.ray_engine.pool_size)."""
    import math

    from going_modular.deploy.batch.ray_engine import pool_size

    if _unanswered(answer):
        return False

    def capacity(cpus: int) -> float:  # images/s of the actor pool batch.ray_engine starts on `cpus` CPUs
        actors, each = pool_size(cpus, None)
        return actors * each * images_per_cpu

    needed = images / seconds
    truth = next(cpus for cpus in range(1, 10_000_000) if capacity(cpus) >= needed)
    low = math.ceil(needed / images_per_cpu)
    return _verdict(answer == truth, f"{truth} CPUs ({needed:,.0f} images/s: {low} actor CPUs plus the read reserve)",
                    f"{answer} CPUs: {needed:,.0f} images/s needs {low} actor CPUs, and the read tasks keep a "
                    "tenth of the cluster (at least one CPU)")
