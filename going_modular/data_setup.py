"""Getting data: download (or mirror) the course zip, build DataLoaders, load Food-101.

Every download source is configurable so the same code runs in Colab (internet) and on
machines without it: set FOODVISION_DATA_MIRROR to a folder (or URL) that holds the files.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, Subset, random_split
from torchvision import datasets, transforms

from going_modular.deploy.bundle import read_class_names  # noqa: F401  (re-exported: train, evaluate)
from going_modular.deploy.errors import UsageError, UserError
from going_modular.deploy.files import sha256sum
from going_modular.deploy.image import IMAGE_SUFFIXES, InvalidImageError, load_image

COURSE_DATA_URL = ("https://github.com/mrdbourke/pytorch-deep-learning/raw/main/data/"
                   "pizza_steak_sushi_20_percent.zip")
COURSE_DATA_SHA256 = "10feb9be17a6778d58a770ac4caf56882f4544b5ceef3f5826bfaba82c538131"
MIRROR_ENV = "FOODVISION_DATA_MIRROR"
NUM_WORKERS = min(2, os.cpu_count() or 1)


class DataError(UserError, RuntimeError):
    """A dataset could not be fetched, verified or read."""


def resolve_source(source: str) -> str:
    """Redirect a URL to $FOODVISION_DATA_MIRROR (folder or URL) by its file name, if set."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and urllib.parse.urlparse(source).scheme in ("http", "https"):
        name = Path(urllib.parse.urlparse(source).path).name
        return mirror.rstrip("/") + "/" + name if "://" in mirror else str(Path(mirror) / name)
    return source


def _fetch(source: str, dest: Path) -> None:
    """Copy a local path / file:// URL, or download http(s), to dest."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(source, timeout=60) as r, open(dest, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(f"could not reach URL {source} ({e}); set {MIRROR_ENV} or pass a local path") from e
        return
    path = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(source)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    shutil.copyfile(path, dest)


def download_data(source: str = COURSE_DATA_URL, destination: str | Path = "pizza_steak_sushi_20_percent",
                  remove_source: bool = True, sha256: str | None = None, data_dir: str | Path = "data") -> Path:
    """Fetch a zip (URL, local path or file:// URL) and extract it into `destination`, once.

    As in the course, a bare name goes under `data_dir` ("pizza_steak_sushi_20_percent" ->
    data/pizza_steak_sushi_20_percent); a path with a folder in it is used as given. Idempotent:
    if the destination already holds files, nothing is fetched. The zip is verified (optional
    sha256, zip integrity) and extracted into a temporary folder that is renamed into place only
    on success, so a failure never leaves a half-extracted dataset behind. remove_source=False
    keeps the fetched zip beside the destination (the course deletes it by default).
    """
    destination = Path(destination)
    if len(destination.parts) == 1:
        destination = Path(data_dir) / destination
    if destination.is_dir() and any(destination.iterdir()):
        print(f"[INFO] {destination} exists, skipping download.")
        return destination
    if sha256 is None and Path(urllib.parse.urlparse(source).path).name == Path(COURSE_DATA_URL).name:
        sha256 = COURSE_DATA_SHA256
    resolved = resolve_source(source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".download-") as tmp:
        zip_path = Path(tmp) / "data.zip"
        print(f"[INFO] Fetching {resolved} ...")
        _fetch(resolved, zip_path)
        if sha256 is not None and (digest := sha256sum(zip_path)) != sha256:
            raise DataError(f"sha256 mismatch for {resolved}: expected {sha256}, got {digest}")
        extract_dir = Path(tmp) / "extracted"
        try:
            with zipfile.ZipFile(zip_path) as zf:
                if (bad := zf.testzip()) is not None:
                    raise DataError(f"corrupt zip {resolved}: bad CRC in {bad}")
                zf.extractall(extract_dir)
        except zipfile.BadZipFile as e:
            raise DataError(f"{resolved} is not a valid zip file ({e})") from e
        if destination.exists():
            destination.rmdir()  # empty (checked above)
        extract_dir.rename(destination)
        if not remove_source:
            zip_path.rename(destination.parent / Path(urllib.parse.urlparse(resolved).path).name)
    print(f"[INFO] Extracted to {destination}")
    return destination


def course_dataset(data: str | Path, data_dir: str | Path = "data") -> Path:
    """`data` itself when it is a folder with train/ (an ImageFolder root), else the course dataset of
    that name (e.g. "pizza_steak_sushi_20_percent"), downloaded once into data_dir/<name>."""
    root = Path(data)
    if (root / "train").is_dir():
        return root
    return download_data(COURSE_DATA_URL.replace("pizza_steak_sushi_20_percent", str(data)), data, data_dir=data_dir)


def check_image_folder(root: str | Path) -> None:
    """Raise a clear DataError if `root` is not a usable ImageFolder (missing, empty, empty class)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"no class folders in {root} (expected {root}/<class_name>/<image>.jpg)")
    exts = tuple(datasets.folder.IMG_EXTENSIONS)
    empty = [c.name for c in classes if not any(f.suffix.lower() in exts for f in c.rglob("*"))]
    if empty:
        raise DataError(f"class folder(s) with no images in {root}: {', '.join(empty)}")


def image_loader(path: str):
    """ImageFolder loader: the same decoding as at prediction time, and errors that name the file."""
    try:
        return load_image(path)
    except InvalidImageError as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def labelled_images(data: dict, split: str) -> list[tuple[Path, str]]:
    """[(image path, class name)] of a split: an ImageFolder root (root/split/class/*.jpg), or a
    Food101 root (root/food-101/meta/split.json), or a course dataset name (downloaded once)."""
    if data.get("food101_root"):
        meta_dir = Path(data["food101_root"]) / "food-101"
        index = meta_dir / "meta" / f"{split}.json"
        if not index.is_file():
            raise DataError(f"no Food-101 {split} split at {index}")
        listing = json.loads(index.read_text())
        return [(meta_dir / "images" / f"{item}.jpg", name) for name in sorted(listing) for item in listing[name]]
    root = course_dataset(data["data"], data.get("data_dir") or "data")
    check_image_folder(root / split)
    return [(p, p.parent.name) for p in sorted((root / split).glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def create_dataloaders(train_dir: str | Path, test_dir: str | Path, transform, batch_size: int = 32,
                       num_workers: int = NUM_WORKERS, train_transform=None, seed: int = 42):
    """ImageFolder DataLoaders. `transform` is used for test (and train unless `train_transform`).

    Returns (train_dataloader, test_dataloader, class_names).
    """
    for d in (train_dir, test_dir):
        check_image_folder(d)
    train_data = datasets.ImageFolder(train_dir, transform=train_transform or transform, loader=image_loader)
    test_data = datasets.ImageFolder(test_dir, transform=transform, loader=image_loader)
    if train_data.classes != test_data.classes:
        raise DataError(f"train classes {train_data.classes} != test classes {test_data.classes}")
    g = torch.Generator().manual_seed(seed)  # same shuffle order every run
    train_dl = DataLoader(train_data, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                          pin_memory=torch.cuda.is_available(), generator=g,
                          persistent_workers=num_workers > 0)
    test_dl = DataLoader(test_data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                         pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)
    return train_dl, test_dl, train_data.classes


def check_food101_images(root: str | Path) -> None:
    """Raise a clear DataError if classes that a Food-101 root's splits list have no photos on disk
    (a partial copy or download): torchvision would only fail on the first missing file, mid-epoch.
    Each class's first and last listed photo are checked, which stays fast on the full 101,000."""
    meta, images = Path(root) / "food-101" / "meta", Path(root) / "food-101" / "images"
    for split in ("train", "test"):
        index = meta / f"{split}.json"
        if not index.is_file():
            raise DataError(f"no Food-101 {split} split at {index}")
        listing = json.loads(index.read_text())
        missing = sorted(name for name, items in listing.items()
                         if not items or not all((images / f"{item}.jpg").is_file() for item in (items[0], items[-1])))
        if missing:
            raise DataError(f"{root}: {len(missing)} of the {len(listing)} classes in meta/{split}.json have no photos "
                            f"in food-101/images/ ({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}); "
                            f"copy or download them again")


def create_food101_datasets(root: str | Path = "data", transform=None, train_transform=None,
                            download: bool = False, class_names: list[str] | None = None):
    """torchvision.datasets.Food101, unchanged, for train and test.

    download=True fetches the full 5 GB dataset (Colab). Offline, point `root` at a folder in
    Food101's layout (e.g. ../shared/data/food101_mini). If `class_names` (e.g. the full 101
    list) is given, targets are mapped into that list, so a 101-way head can be trained on a
    subset of classes. Returns (train_data, test_data, class_names).
    """
    root = Path(root)
    if not download and not (root / "food-101" / "meta" / "classes.txt").is_file():
        raise DataError(f"no Food-101 data under {root}/food-101 (pass download=True or the right root)")
    if not download:
        check_food101_images(root)
    try:
        train_data = datasets.Food101(root, split="train", transform=train_transform or transform, download=download)
    except urllib.error.URLError as e:
        raise DataError(f"could not download Food-101 ({e}); set {MIRROR_ENV} or pass a root holding food-101/") from e
    target_transform = None
    if class_names is not None:
        missing = set(train_data.classes) - set(class_names)
        if missing:
            raise DataError(f"dataset classes not in class_names: {sorted(missing)}")
        target_transform = [class_names.index(c) for c in train_data.classes].__getitem__
    train_data.target_transform = target_transform
    test_data = datasets.Food101(root, split="test", transform=transform, target_transform=target_transform)
    return train_data, test_data, list(class_names or train_data.classes)


def split_dataset(dataset, split_size: float = 0.2, seed: int = 42):
    """The course's split: two seeded random splits, of `split_size` and the rest of `dataset`."""
    length_1 = int(len(dataset) * split_size)
    return random_split(dataset, [length_1, len(dataset) - length_1], generator=torch.Generator().manual_seed(seed))


def take_batches(dataloader: DataLoader, n_batches: int | None, seed: int = 42) -> DataLoader:
    """The same loader over a seeded random `n_batches` batches' worth of its samples (fast mode);
    itself if n_batches is None. Limiting the data rather than the loops keeps a `max_batches`
    out of every training signature; a random draw (not the first files) keeps every class in it.
    """
    if n_batches is None:
        return dataloader
    n = min(len(dataloader.dataset), n_batches * dataloader.batch_size)
    picked = sorted(torch.randperm(len(dataloader.dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist())
    shuffle = isinstance(dataloader.sampler, RandomSampler)
    return DataLoader(Subset(dataloader.dataset, picked), batch_size=dataloader.batch_size, shuffle=shuffle,
                      num_workers=dataloader.num_workers, generator=dataloader.generator,
                      pin_memory=dataloader.pin_memory, persistent_workers=dataloader.persistent_workers)


def dataset_targets(dataset) -> list[int]:
    """The label of every sample of an ImageFolder, a Food101 (its target_transform applied) or a
    Subset of either, read from their index: no image is decoded."""
    if isinstance(dataset, Subset):
        targets = dataset_targets(dataset.dataset)
        return [targets[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None) or dataset._labels
    mapped = getattr(dataset, "target_transform", None)
    return [mapped(t) for t in targets] if mapped else list(targets)


VIEWS = ("center", "flip", "zoom")
ZOOM = 1.15  # the zoom view resizes the short side to 1.15x the eval resize, then centre-crops


def view_transform(transform, view: str = "center"):
    """A fixed (non-random) variant of an eval transform (Resize, CenterCrop, ToTensor, Normalize):
    "center" is the transform itself, "flip" mirrors its crop left-right, "zoom" crops tighter.
    Fixed views of the training photos are augmentation that feature caching can still cache."""
    if view == "center":
        return transform
    if view == "flip":
        return transforms.Compose([transform, transforms.RandomHorizontalFlip(p=1.0)])
    if view == "zoom":
        steps = list(transform.transforms)
        resize = steps[0]
        if not isinstance(resize, transforms.Resize) or not isinstance(resize.size, int):
            raise ValueError(f"the zoom view needs a transform that starts with Resize(int), got {transform}")
        steps[0] = transforms.Resize(round(resize.size * ZOOM), interpolation=resize.interpolation)
        return transforms.Compose(steps)
    raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")


def split_subset(dataset, fraction: float = 0.2, seed: int = 42) -> Subset:
    """A seeded, class-stratified random `fraction` of a dataset (e.g. 20% of Food-101)."""
    if not 0 < fraction <= 1:
        raise UsageError(f"fraction must be in (0, 1], got {fraction}")
    targets = getattr(dataset, "targets", None) or dataset._labels
    by_class = defaultdict(list)
    for i, t in enumerate(targets):
        by_class[t].append(i)
    rng = random.Random(seed)
    picked = []
    for t in sorted(by_class):
        idx = by_class[t]
        picked += rng.sample(idx, max(1, round(len(idx) * fraction)))
    return Subset(dataset, sorted(picked))
