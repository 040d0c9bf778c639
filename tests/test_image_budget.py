"""The decode budget of load_image against hostile files: tiny files that declare huge images.

Memory is measured from /proc: each decode runs in a fresh subprocess that resets its peak RSS
(VmHWM, via /proc/self/clear_refs) just before decoding and reports how far the peak rose.
The hostile files are generated here: they are attack inputs, not photos.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from going_modular.deploy import image
from going_modular.deploy.image import InvalidImageError, decoded_bytes_estimate, load_image

ROOT = Path(__file__).resolve().parents[1]
SIDE = 10950  # 119.9 megapixels: inside the pixel limit, so only the memory budget can stop these

MEASURE = """
import json, sys
from going_modular.deploy.image import load_image

def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
before = status_mb("VmRSS")
try:
    outcome = {"size": list(load_image(data).size)}
except Exception as e:
    outcome = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps({"peak_growth_mb": status_mb("VmHWM") - before, **outcome}))
"""


def decode_in_subprocess(path: Path, **env) -> dict:
    """load_image(path's bytes) in a fresh interpreter: {"peak_growth_mb", "size" or "error"}."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120, check=True)
    return json.loads(out.stdout)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def hostile_png(side: int, bit_depth: int, bytes_per_row: int) -> bytes:
    """A greyscale PNG of side x side black pixels: zlib shrinks the rows ~1000x, so a few hundred KB
    declare hundreds of MB of pixels. Compressed a row at a time: the test never holds them all."""
    z = zlib.compressobj(9)
    row = bytes(1 + bytes_per_row)  # filter byte 0 + zero pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([bit_depth, 0, 0, 0, 0])  # colour type 0: greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def progressive_jpeg_declaring(width: int, height: int) -> bytes:
    """A real 64x64 progressive JPEG whose frame header claims width x height: libjpeg allocates every
    DCT coefficient of the claimed size (3 bytes a pixel) whatever the draft scale."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 60)).save(buf, "JPEG", progressive=True)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc2")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    files = {"1-bit.png": hostile_png(SIDE, 1, (SIDE + 7) // 8),  # 120 MB decoded
             "16-bit.png": hostile_png(SIDE, 16, 2 * SIDE),  # 240 MB decoded
             "progressive.jpg": progressive_jpeg_declaring(10000, 10000)}  # 306 MB of coefficients
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.mark.parametrize("name, needed_mb", [("1-bit.png", 120), ("16-bit.png", 240), ("progressive.jpg", 307)])
def test_hostile_header_is_refused_before_decoding(hostile, name, needed_mb):
    assert hostile[name].stat().st_size < 250_000  # small files...
    result = decode_in_subprocess(hostile[name])
    assert result["error"].startswith("InvalidImageError: Image is too large")
    assert f"about {needed_mb} MB; the limit is {image.MAX_DECODE_MB} MB" in result["error"]
    assert result["peak_growth_mb"] < 10  # ...refused from the header: nothing decoded
    with pytest.raises(InvalidImageError, match="too large"):
        decoded_bytes_estimate(hostile[name].read_bytes())


@pytest.mark.parametrize("name, pixel_bytes", [("1-bit.png", 1), ("16-bit.png", 2)])
def test_decode_within_a_raised_budget_peaks_at_its_estimate(hostile, monkeypatch, name, pixel_bytes):
    """Allowed in, the image costs what the estimate says (no converted or float64 copies: before
    this budget the 16-bit file took 2,976 MB and 7.8 s of CPU) and comes back reduced."""
    monkeypatch.setenv(image.DECODE_MB_ENV, "300")
    estimate = decoded_bytes_estimate(hostile[name].read_bytes())
    assert estimate == SIDE * SIDE * pixel_bytes
    result = decode_in_subprocess(hostile[name], **{image.DECODE_MB_ENV: "300"})
    assert result["size"] == [522, 522]  # reduced 21x (10950 // 512): both sides still >= 512
    assert result["peak_growth_mb"] < estimate / 2**20 * 1.1 + 16


def test_estimate_reads_the_header_and_counts_jpeg_draft_scale(shared_data):
    photo = Image.open(shared_data / "custom_images" / "pizza-dad.jpeg").convert("RGB").resize((2048, 1536))
    jpeg, png = io.BytesIO(), io.BytesIO()
    photo.save(jpeg, "JPEG")
    photo.save(png, "PNG", compress_level=1)
    assert decoded_bytes_estimate(jpeg.getvalue()) == 1024 * 768 * 4  # decoded at 1/2 scale
    assert decoded_bytes_estimate(jpeg.getvalue(), max_side_hint=256) == 512 * 384 * 4
    assert decoded_bytes_estimate(png.getvalue()) == 2048 * 1536 * 4  # PNGs decode at full size first
    assert load_image(jpeg.getvalue()).size == (1024, 768)  # the JPEG decoder scales by 1/2, 1/4, 1/8
    assert load_image(png.getvalue()).size == (683, 512)  # a box filter by any whole factor, here 3
    with pytest.raises(InvalidImageError, match="not an image"):
        decoded_bytes_estimate(b"%PDF-1.4 not an image")


def test_limits_come_from_the_environment(monkeypatch):
    small = io.BytesIO()
    Image.new("RGB", (40, 40)).save(small, "PNG")
    monkeypatch.setenv(image.PIXELS_ENV, "1000")
    with pytest.raises(InvalidImageError, match=r"too large \(40x40\)"):
        load_image(small.getvalue())
    monkeypatch.setenv(image.PIXELS_ENV, "")
    monkeypatch.setenv(image.DECODE_MB_ENV, "lots")
    with pytest.raises(ValueError, match="FOODVISION_MAX_DECODE_MB must be a positive whole number"):
        load_image(small.getvalue())


@pytest.fixture(scope="module")
def photo(shared_data) -> Image.Image:
    return Image.open(shared_data / "custom_images" / "pizza-dad.jpeg").convert("RGB").resize((1100, 1030))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "1", "I;16"])
def test_strip_by_strip_reduction_equals_one_whole_reduction(photo, monkeypatch, mode):
    """Reducing in strips of a few rows bounds the temporaries and changes no pixel."""
    if mode == "I;16":
        source = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        source = photo.convert(mode)
    whole = load_image(source)
    monkeypatch.setattr(image, "STRIP_PIXELS", 1100 * 5)  # strips of 4 rows (whole 2x2 blocks)
    strips = load_image(source)
    assert whole.size == strips.size == (550, 515)
    assert np.array_equal(np.asarray(whole), np.asarray(strips))
    if mode == "RGB":  # and the reduced photo is the photo: a 2x2 box average of it
        expected = np.asarray(photo, dtype=np.float32).reshape(515, 2, 550, 2, 3).mean(axis=(1, 3))
        assert np.abs(np.asarray(whole, dtype=np.float32) - expected).max() <= 1
