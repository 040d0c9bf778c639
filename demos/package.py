"""Assemble a self-contained Hugging Face Space folder from a demo folder.

    python -m demos.package foodvision_mini dist/foodvision_mini

A Space receives only its own folder, but the demos import `going_modular` rather than carrying a
pasted copy of it. This copies the demo folder (app.py, model.py, requirements.txt, README.md with
the Spaces front matter, examples/, the int8 bundle) and, at build time, the serving half of
`going_modular` (`going_modular/deploy`, which needs no torch) next to app.py, where app.py imports
it from. Upload the result as the Space's repository.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from going_modular.deploy import cli
from going_modular.deploy.errors import UserError

DEMOS_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = DEMOS_DIR.parent / "going_modular"
REQUIRED = ("app.py", "model.py", "requirements.txt", "README.md", "examples")
# Caches and local run outputs never belong in a Space.
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".gradio", "flagged", "*.tmp")


class PackageError(UserError, RuntimeError):
    """The demo folder is incomplete or the output folder is in the way."""


def demo_names() -> list[str]:
    """The demo folders under demos/ (those with an app.py)."""
    return sorted(p.name for p in DEMOS_DIR.iterdir() if (p / "app.py").is_file())


def check_demo(src: Path) -> None:
    """Raise PackageError unless `src` has everything a Space needs, its bundle included."""
    missing = [name for name in REQUIRED if not (src / name).exists()]
    if not any(src.glob("*.onnx")):
        missing.append("a *.onnx bundle (python -m going_modular.export)")
    if missing:
        raise PackageError(f"{src} is missing: {', '.join(missing)}")
    if not (src / "README.md").read_text().startswith("---\n"):
        raise PackageError(f"{src / 'README.md'} needs the Hugging Face Spaces YAML front matter (--- ... ---)")


def build_space(demo: str, out: str | os.PathLike) -> Path:
    """Copy demos/<demo> plus going_modular into `out` (which must not exist or be empty).

    Built in a temporary folder beside `out` and renamed into place, so a failure never leaves
    a half-built Space behind.
    """
    src, out = DEMOS_DIR / demo, Path(out)
    if demo not in demo_names():
        raise PackageError(f"unknown demo {demo!r}; choose one of {demo_names()}")
    check_demo(src)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackageError(f"{out} already exists and is not empty; remove it or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        shutil.copytree(src, tmp / "space", ignore=IGNORE)
        # Only the serving wing: the Space never imports torch, so the training code stays home.
        package = tmp / "space" / "going_modular"
        shutil.copytree(PACKAGE_DIR / "deploy", package / "deploy", ignore=IGNORE)
        shutil.copy2(PACKAGE_DIR / "__init__.py", package / "__init__.py")
        if out.exists():
            out.rmdir()  # empty (checked above)
        (tmp / "space").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo", help=f"demo folder under demos/ ({', '.join(demo_names())})")
    p.add_argument("out", help="folder to create, e.g. dist/foodvision_mini")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    out = build_space(args.demo, args.out)
    print(f"[INFO] Space folder ready: {out} (upload it as a Hugging Face Space, or run `python app.py` in it)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
