"""download_data, the mirror, dataloaders and Food-101 loading, on real files and real HTTP."""
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision import transforms as T

from going_modular import data_setup
from going_modular.data_setup import DataError, create_dataloaders, download_data
from going_modular.deploy.bundle import BundleError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def http_mirror(shared_data):
    """A real HTTP server on 127.0.0.1 serving the data mirror folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _counts(root: Path) -> dict:
    return {f"{s}/{c}": len(list((root / s / c).iterdir()))
            for s in ("train", "test") for c in ("pizza", "steak", "sushi")}


def test_download_over_http_verifies_and_extracts(http_mirror, tmp_path, monkeypatch):
    monkeypatch.delenv(data_setup.MIRROR_ENV, raising=False)
    dest = download_data(f"{http_mirror}/pizza_steak_sushi_20_percent.zip", tmp_path / "pss")
    assert _counts(dest) == {"train/pizza": 154, "train/steak": 146, "train/sushi": 150,
                             "test/pizza": 46, "test/steak": 58, "test/sushi": 46}
    # idempotent: a second call does not fetch (the server is not even needed)
    assert download_data("http://127.0.0.1:9/unreachable.zip", dest) == dest


def test_mirror_env_redirects_course_url(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(data_setup.MIRROR_ENV, str(shared_data))
    expected = str(shared_data / "pizza_steak_sushi_20_percent.zip")
    assert data_setup.resolve_source(data_setup.COURSE_DATA_URL) == expected
    dest = download_data(destination=tmp_path / "pss")
    assert (dest / "train" / "pizza").is_dir()


def test_mirror_can_be_a_url(http_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(data_setup.MIRROR_ENV, http_mirror)
    dest = download_data(destination=tmp_path / "pss")
    assert (dest / "test" / "sushi").is_dir()


def test_file_url_and_local_path(shared_data, tmp_path):
    zip_path = shared_data / "pizza_steak_sushi_20_percent.zip"
    assert (download_data(zip_path.as_uri(), tmp_path / "a") / "train").is_dir()
    assert (download_data(str(zip_path), tmp_path / "b") / "test").is_dir()


def test_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data_setup.MIRROR_ENV, raising=False)
    with pytest.raises(DataError, match="could not reach URL .*FOODVISION_DATA_MIRROR"):
        download_data("http://127.0.0.1:9/pizza_steak_sushi_20_percent.zip", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".download-*")), "temporary files left behind"


def test_wrong_sha256_leaves_nothing(shared_data, tmp_path):
    with pytest.raises(DataError, match="sha256 mismatch"):
        download_data(str(shared_data / "pizza_steak_sushi_20_percent.zip"), tmp_path / "x", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_course_zip_is_checked_against_known_sha(tmp_path, shared_data, monkeypatch):
    """A file named like the course zip but with other content is refused (known sha256)."""
    fake_dir = tmp_path / "mirror"
    fake_dir.mkdir()
    with zipfile.ZipFile(fake_dir / "pizza_steak_sushi_20_percent.zip", "w") as zf:
        zf.writestr("train/pizza/a.txt", "not the course data")
    monkeypatch.setenv(data_setup.MIRROR_ENV, str(fake_dir))
    with pytest.raises(DataError, match="sha256 mismatch"):
        download_data(destination=tmp_path / "x")


def test_corrupt_zip_leaves_nothing(tmp_path, shared_data):
    good = (shared_data / "pizza_steak_sushi_20_percent.zip").read_bytes()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(DataError, match="not a valid zip"):
        download_data(str(bad), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".download-*"))
    # a zip whose member data is damaged (bad CRC) is refused too
    crc = tmp_path / "crc.zip"
    with zipfile.ZipFile(crc, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("train/pizza/a.txt", b"A" * 1000)
    raw = bytearray(crc.read_bytes())
    raw[raw.index(b"A" * 10) + 5] = ord("B")
    crc.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt zip"):
        download_data(str(crc), tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_missing_source_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        download_data(str(tmp_path / "nope.zip"), tmp_path / "out")


def test_dataloaders_on_real_data(pss_dir):
    transform = T.Compose([T.Resize((64, 64)), T.ToTensor()])
    train_dl, test_dl, classes = create_dataloaders(pss_dir / "train", pss_dir / "test", transform, batch_size=8,
                                                    num_workers=0)
    assert classes == ["pizza", "steak", "sushi"]
    assert len(train_dl.dataset) == 450 and len(test_dl.dataset) == 150
    X, y = next(iter(train_dl))
    assert X.shape == (8, 3, 64, 64) and y.dtype == torch.int64


def test_dataloaders_bad_folders(synthetic_dir, tmp_path):
    t = T.ToTensor()
    with pytest.raises(DataError, match="not found"):
        create_dataloaders(tmp_path / "missing", synthetic_dir / "test", t)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        create_dataloaders(tmp_path / "empty", synthetic_dir / "test", t)
    (tmp_path / "one" / "pizza").mkdir(parents=True)
    (tmp_path / "one" / "steak").mkdir()
    (tmp_path / "one" / "pizza" / "a.jpg").write_bytes((synthetic_dir / "test" / "discs" / "discs_0.jpg").read_bytes())
    with pytest.raises(DataError, match="no images in .*steak"):
        create_dataloaders(tmp_path / "one", synthetic_dir / "test", t)


def test_unreadable_image_in_dataset_raises_clearly(synthetic_dir, tmp_path):

    root = tmp_path / "ds"
    shutil.copytree(synthetic_dir, root)
    (root / "train" / "discs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    train_dl, _, _ = create_dataloaders(root / "train", root / "test", T.ToTensor(), batch_size=100, num_workers=0)
    with pytest.raises(DataError, match="cannot read image .*broken.jpg: The image file is damaged"):
        next(iter(train_dl))


def test_food101_real_subset_and_101_way_targets(shared_data):
    all_names = data_setup.read_class_names(shared_data / "food101_classes.txt")
    assert len(all_names) == 101
    train, test, names = data_setup.create_food101_datasets(shared_data / "food101_mini", transform=T.ToTensor())
    assert len(names) == 23 and len(train) == 1380 and len(test) == 460
    train101, test101, names101 = data_setup.create_food101_datasets(
        shared_data / "food101_mini", transform=T.ToTensor(), class_names=all_names)
    assert names101 == all_names
    _, y = test101[0]
    _, y23 = test[0]
    assert all_names[y] == names[y23]  # the same image, the label mapped into the 101 list
    sub = data_setup.split_subset(train101, 0.2, seed=42)
    assert len(sub) == 23 * 12  # 20% of 60 per class, stratified
    assert sub.indices == data_setup.split_subset(train101, 0.2, seed=42).indices  # seeded


def test_food101_missing_root_and_wrong_class_file(tmp_path, shared_data):
    with pytest.raises(DataError, match="no Food-101 data"):
        data_setup.create_food101_datasets(tmp_path)
    wrong = tmp_path / "classes.txt"
    wrong.write_text("pizza\nsteak\nsushi\n")
    with pytest.raises(DataError, match="not in class_names"):
        data_setup.create_food101_datasets(shared_data / "food101_mini", class_names=data_setup.read_class_names(wrong))
    wrong.write_text("pizza\npizza\n")
    with pytest.raises(BundleError, match="unique class names"):  # read by the serving wing's reader
        data_setup.read_class_names(wrong)


def test_food101_root_with_missing_classes_is_one_clear_error(tmp_path, shared_data):
    """A partial copy: meta/ lists 23 classes but two have no photos; torchvision alone would fail on
    the first missing file, in a DataLoader worker, mid-epoch."""
    source = shared_data / "food101_mini" / "food-101"
    root = tmp_path / "partial"
    shutil.copytree(source / "meta", root / "food-101" / "meta")
    classes = sorted(d.name for d in (source / "images").iterdir())
    for name in classes[2:]:
        (root / "food-101" / "images").mkdir(parents=True, exist_ok=True)
        (root / "food-101" / "images" / name).symlink_to(source / "images" / name)
    with pytest.raises(DataError, match=rf"2 of the 23 classes in meta/train.json have no photos .*"
                                        rf"\({classes[0]}, {classes[1]}\)"):
        data_setup.create_food101_datasets(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "going_modular.train", "--food101-root", str(root), "--epochs", "1",
                           "--out", str(tmp_path / "x.pth")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"error: {root}: 2 of the 23 classes") and "Traceback" not in proc.stderr


def test_sha256sum_matches_hashlib(shared_data):
    p = shared_data / "food101_classes.txt"
    assert data_setup.sha256sum(p) == hashlib.sha256(p.read_bytes()).hexdigest()
