"""The web service as tests and benchmarks use it: `python -m going_modular.deploy.serve` running on
a free 127.0.0.1 port in a subprocess (started, awaited and stopped by demo_support.running_app)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from demo_support import ROOT, RunningApp, clean_env, free_port, running_app


@contextmanager
def serve_in_subprocess(model: str | Path | None = None, args: tuple[str, ...] = (),
                        startup_timeout: float = 180, cwd: Path = ROOT, **env: str) -> Iterator[RunningApp]:
    """Yield the running server (`.url`, `.proc`, `.log()`); `model` defaults to the shipped Mini bundle;
    `cwd`: the checkout whose server runs (another one for before/after benchmarks);
    `env`: extra environment variables for the server."""
    port = free_port()
    model_args = ("--model", str(model)) if model else ()
    with running_app(["-m", "going_modular.deploy.serve", *model_args, "--log-level", "warning", *args,
                      "--port", str(port)], cwd=cwd, env=clean_env(**env), port=port,
                     startup_timeout=startup_timeout) as app:
        yield app
