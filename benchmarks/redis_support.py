"""A real Redis for the event-stream tests, its benchmark and notebook 09: Debian's redis-server on a
free 127.0.0.1 port with its data in a temporary folder (append-only file on, so a stop and a restart
keep every stream and group, as a production Redis would), stopped afterwards; and consumers
(`python -m going_modular.deploy.stream --source redis://...`) as the separate processes they are."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from benchmarks.support import ROOT, clean_env, free_port

REDIS_SERVER = "redis-server"
INSTALL_HINT = "install Debian's redis-server (`make setup`, or `apt-get install -y redis-server`)"


def redis_server_binary() -> str | None:
    return shutil.which(REDIS_SERVER)


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.05):
    """condition()'s first truthy value, polled every `every` s; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """One redis-server process; `stop()` and `start()` again keep its data (same folder, same port)."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder, self.port = Path(folder), port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(f"redis-server not found: {INSTALL_HINT}")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self.log()[-2000:]}")
            try:
                return self.client().ping()
            except Exception:  # not listening yet, or still loading its data
                return False
        wait_for(answers, 30, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        """SIGTERM, as an init system stops it: Redis writes its append-only file out, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.is_file() else ""


@contextmanager
def redis_server(folder: str | Path | None = None) -> Iterator[RedisServer]:
    """A started RedisServer (in a new temporary folder unless `folder` is given), stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="redis-") as tmp:
        server = RedisServer(Path(folder or tmp)).start()
        try:
            yield server
        finally:
            server.stop()


class ConsumerProcess:
    """`python -m going_modular.deploy.stream --source URL --consumer NAME ...` in a subprocess,
    everything it prints going to a file (`log()`)."""

    def __init__(self, url: str, name: str, args: tuple[str, ...] = (), log_dir: str | Path | None = None):
        self.name = name
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="consumer-")) / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "going_modular.deploy.stream", "--source", url, "--consumer", name, *args],
            cwd=ROOT, env=clean_env(), stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def pending(client, stream: str, group: str) -> int:
    """Messages of `group` delivered and not yet acknowledged (0 if the group does not exist yet)."""
    import redis

    try:
        return int(client.xpending(stream, group)["pending"])
    except redis.ResponseError:  # no such stream or group yet
        return 0
