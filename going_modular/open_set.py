"""The open-set score: how far an image is from the classes a model knows ("not one of mine").

`build_open_set` fits an `OpenSetScore` on training images only; `going_modular.export` puts it in
the bundle's graph as a second output ("ood_score", threshold 1.0 in the metadata), so every
serving mode reports `known` without any code of its own. benchmarks/open_set.py measures it on
photos that neither fitted nor calibrated it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from going_modular.data_setup import DataError, check_image_folder, labelled_images
from going_modular.deploy.bundle import OOD_NAME
from going_modular.deploy.files import write_atomic
from going_modular.deploy.image import IMAGE_SUFFIXES
from going_modular.deploy.predictor import OnnxPredictor, preprocess_pixels

# uint8 pixels (N, H, W, 3) -> the pooled features (N, D) the classifier head sees.
Features = Callable[[torch.Tensor], torch.Tensor]


class OpenSetScore(nn.Module):
    """Pooled features (N, D) -> OOD score (N,): above 1.0 means "not one of my classes".

    Two measured signals (benchmarks/open_set.py), each divided by its own threshold so that one
    score and one threshold (1.0) serve both:
    - distance: 1 - the cosine similarity to the k-th nearest training image of the known classes.
      Far from every training photo: not food at all (a cat, a rocket, a portrait).
    - reject: a linear classifier over the known classes plus other real Food-101 dishes; the
      probability it gives to the other dishes. Frozen features put other dishes close to
      pizza, steak or sushi, so distance alone misses most of them. Absent when no other dishes
      were given (FoodVision Big knows every class of its data).
    """

    def __init__(self, bank: torch.Tensor, k: int, distance_threshold: float, reject: nn.Module | None = None,
                 num_known: int = 0, reject_threshold: float = 1.0):
        super().__init__()
        self.register_buffer("bank", nn.functional.normalize(bank, dim=1))
        self.k, self.distance_threshold = k, distance_threshold
        self.reject, self.num_known, self.reject_threshold = reject, num_known, reject_threshold

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        similarity = nn.functional.normalize(features, dim=1) @ self.bank.T
        return 1 - torch.topk(similarity, self.k, dim=1).values[:, -1]

    def reject_prob(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.reject(features), dim=1)[:, self.num_known:].sum(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        score = self.distance(features) / self.distance_threshold
        if self.reject is not None:
            score = torch.maximum(score, self.reject_prob(features) / self.reject_threshold)
        return score


OPEN_SET_K = 10  # k-th nearest training image: robust to a few odd training photos
# Training images kept for the distance: at most 40 per class (Mini: 120) and 505 in all (Big: 5 of
# each of its 101 dishes), so the bank adds at most 2.5 MB (fp32) to the bundle.
OPEN_SET_BANK_PER_CLASS, OPEN_SET_BANK_IMAGES = 40, 505
OPEN_SET_FOLDS = 5


def training_features(features: Features, images: list[Path], spec: dict, batch_size: int = 32,
                      cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Pooled backbone features (N, D) of image files, preprocessed exactly as serving does.

    cache_dir: a folder of this model's features (export.feature_cache_key names it), kept per
    image file, so a second export of the same model runs the backbone only on new photos."""
    cache, path = {}, None
    if cache_dir is not None:
        path = Path(cache_dir) / "features.pt"
        if path.is_file():
            saved = torch.load(path, weights_only=True)
            cache = dict(zip((os.path.realpath(p) for p in saved["paths"]), saved["features"], strict=True))
    images = [os.path.realpath(p) for p in images]  # one key per photo however its folder was named
    missing = [p for p in dict.fromkeys(images) if p not in cache]
    for i in range(0, len(missing), batch_size):
        chunk = missing[i:i + batch_size]
        pixels = [preprocess_pixels(p, spec) for p in chunk]
        with torch.inference_mode():
            cache.update(zip(chunk, features(torch.from_numpy(np.stack(pixels))), strict=True))
    if path is not None and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(cache)
        write_atomic(path, lambda tmp: torch.save({"paths": names, "features": torch.stack([cache[n] for n in names])},
                                                  tmp))
    if not images:
        raise DataError("no images to compute features of")
    return torch.stack([cache[p] for p in images])


def fit_reject(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-2) -> nn.Module:
    """A class-balanced, L2-regularised linear classifier on standardised features (L-BFGS, deterministic)."""
    torch.manual_seed(0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    linear = nn.Linear(features.shape[1], num_classes)
    counts = torch.bincount(labels, minlength=num_classes).float()
    class_weight = counts.sum() / (num_classes * counts.clamp(min=1))
    x = (features - mean) / std
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(x), labels, weight=class_weight)
        loss = loss + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    # Standardisation folded into the layer: W((f - m) / s) + b == (W / s) f + (b - W m / s).
    folded = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        folded.weight.copy_(linear.weight / std)
        folded.bias.copy_(linear.bias - (linear.weight / std) @ mean)
    return folded.eval()


def fit_open_set(known: torch.Tensor, known_labels: torch.Tensor, other: torch.Tensor, other_labels: torch.Tensor,
                 flag_rate: float = 0.05, seed: int = 42) -> tuple[OpenSetScore, dict]:
    """Fit the open-set scorer and set its thresholds by cross-validation on training images only.

    known: features of the known classes' training images; other: features of other real dishes
    (may be empty). Each image is scored by a scorer fitted without its fold, so the thresholds
    see distances and probabilities of unseen photos, as serving will. The distance threshold
    flags 1% of known-class photos; the reject threshold spends the rest of `flag_rate`.
    """
    num_known = int(known_labels.max()) + 1
    features, labels = torch.cat([known, other]), torch.cat([known_labels, other_labels + num_known])
    is_known = labels < num_known
    folds = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)) % OPEN_SET_FOLDS
    per_class = min(OPEN_SET_BANK_PER_CLASS, OPEN_SET_BANK_IMAGES // num_known)
    in_bank = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_known):
        in_bank[torch.nonzero(labels == c).flatten()[:per_class]] = True
    distance, reject = torch.zeros(len(labels)), torch.zeros(len(labels))
    for fold in range(OPEN_SET_FOLDS):
        held, kept = folds == fold, folds != fold
        scorer = OpenSetScore(features[kept & in_bank], OPEN_SET_K, 1.0)
        distance[held] = scorer.distance(features[held])
        if len(other):
            scorer.reject, scorer.num_known = fit_reject(features[kept], labels[kept], int(labels.max()) + 1), num_known
            with torch.no_grad():
                reject[held] = scorer.reject_prob(features[held])
    distance_threshold = float(torch.quantile(distance[is_known], 0.99))
    reject_threshold = float(torch.quantile(reject[is_known], 1 - (flag_rate - 0.01))) if len(other) else 1.0
    head = fit_reject(features, labels, int(labels.max()) + 1) if len(other) else None
    bank = features[in_bank]
    scorer = OpenSetScore(bank, OPEN_SET_K, distance_threshold, head, num_known, reject_threshold)
    oof = torch.maximum(distance / distance_threshold, reject / reject_threshold)
    other_flagged = round(float((oof[~is_known] > 1).float().mean()), 4) if len(other) else None
    info = {"threshold": 1.0, "output": OOD_NAME,
            "method": "max(k-NN cosine distance to training features, P(other Food-101 dish)), each over its threshold"
                      if len(other) else "k-NN cosine distance to training features, over its threshold",
            "k": OPEN_SET_K, "bank_images": len(bank), "distance_threshold": round(distance_threshold, 6),
            "reject_threshold": round(reject_threshold, 6) if len(other) else None,
            "other_classes": int(other_labels.max()) + 1 if len(other) else 0,
            "cross_validated": {"known_flagged": round(float((oof[is_known] > 1).float().mean()), 4),
                                "other_flagged": other_flagged,
                                "known_images": int(is_known.sum()), "other_images": int((~is_known).sum())}}
    return scorer, info


def menu_photos(folder: str | os.PathLike, class_names: list[str]) -> list[Path]:
    """The clean photos of a calibration folder (FOLDER/<class>/*.jpg, every class one of the model's)."""
    folder = Path(folder)
    check_image_folder(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if unknown := [c for c in classes if c not in class_names]:
        raise DataError(f"calibration photos {folder}: {', '.join(unknown)} is not a class of the model "
                        f"({len(class_names)} classes: {', '.join(class_names[:5])}...)")
    return [p for p in sorted(folder.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def flag_threshold(scores: torch.Tensor, flag_rate: float) -> float:
    """The smallest threshold that flags (score > threshold) at most `flag_rate` of `scores`."""
    allowed = int(flag_rate * len(scores) + 1e-9)
    return float(torch.sort(scores, descending=True).values[min(allowed, len(scores) - 1)])


def calibrate_open_set(scorer: OpenSetScore, info: dict, menu: torch.Tensor, flag_rate: float = 0.05) -> None:
    """Set the scorer's thresholds on the features of clean photos of the known classes (not
    training photos: Food-101's are deliberately uncleaned, so a share of them look like other
    dishes and cross-validating on them set the threshold too conservatively). The distance
    threshold flags 1% of them; the reject threshold spends the rest of `flag_rate`."""
    distance = scorer.distance(menu)
    scorer.distance_threshold = flag_threshold(distance, 0.01)
    if scorer.reject is not None:
        with torch.no_grad():
            reject = scorer.reject_prob(menu)
        by_distance = distance > scorer.distance_threshold
        budget = int(flag_rate * len(menu) + 1e-9) - int(by_distance.sum())
        rest = reject[~by_distance]
        scorer.reject_threshold = flag_threshold(rest, budget / len(rest)) if budget > 0 else float(rest.max())
    info.update({"distance_threshold": round(scorer.distance_threshold, 6),
                 "reject_threshold": round(scorer.reject_threshold, 6) if scorer.reject is not None else None})


def build_open_set(features: Features, spec: dict, class_names: list[str], data: dict, other_root: str | None,
                   log=print, calibration_photos: str | None = None,
                   feature_cache: str | os.PathLike | None = None) -> tuple[OpenSetScore, dict]:
    """The open-set scorer from the training images of `data` and, from `other_root` (a Food-101
    root), the training images of dishes that are not in `class_names`; its thresholds come from
    `calibration_photos` (clean photos of the known classes) when given, else cross-validation.
    `features` maps uint8 pixels (N, H, W, 3) to the pooled features the classifier head sees
    (export.PixelsToLogits.features)."""
    train = labelled_images(data, "train")
    other = [(p, n) for p, n in labelled_images({"food101_root": other_root}, "train")] if other_root else []
    other = [(p, n) for p, n in other if n not in class_names]
    other_names = sorted({n for _, n in other})
    menu = menu_photos(calibration_photos, class_names) if calibration_photos else []
    log(f"[export] open set: features of {len(train)} training images and {len(other)} of "
        f"{len(other_names)} other dishes")
    known = training_features(features, [p for p, _ in train], spec, cache_dir=feature_cache)
    known_labels = torch.tensor([class_names.index(n) for _, n in train])
    others = training_features(features, [p for p, _ in other], spec, cache_dir=feature_cache) if other else known[:0]
    other_labels = torch.tensor([other_names.index(n) for _, n in other], dtype=torch.long)
    scorer, info = fit_open_set(known, known_labels, others, other_labels)
    info["other_root"] = Path(other_root).name if other_root else None
    if menu:
        calibrate_open_set(scorer, info, training_features(features, menu, spec))
        info["calibration_photos"] = {"folder": Path(calibration_photos).name, "images": len(menu)}
    return scorer, info


def calibrate_bundle_threshold(bundle: OnnxPredictor, photos: list[Path], flag_rate: float = 0.05) -> dict:
    """The bundle's own threshold: at most `flag_rate` of the clean calibration photos flagged by
    the int8 graph itself (its features differ slightly from the fp32 ones the scorer was fitted on)."""
    scores = np.concatenate([bundle.scores([bundle.preprocess(p) for p in photos[i:i + 32]])[1]
                             for i in range(0, len(photos), 32)])
    threshold = flag_threshold(torch.from_numpy(scores), flag_rate)
    return {"threshold": threshold, "flagged": round(float((scores > threshold).mean()), 4)}
