"""The web service's limits (the CLI flags), and how --workers processes receive them."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

SETTINGS_ENV = "FOODVISION_SERVE_SETTINGS"  # how --workers processes receive the settings


@dataclass(frozen=True)
class Settings:
    """Every limit of the service (the CLI flags; README lists them)."""
    max_body_mb: float = 20.0  # largest request body
    max_batch_files: int = 32  # files in one /predict/batch request
    batch_megapixels: float = 100.0  # pixels decoded for one /predict/batch request, all files together
    max_batch: int = 32  # images in one forward pass
    max_wait_ms: float = 5.0  # longest a batch waits for requests still preprocessing
    max_queue: int = 32  # requests in progress (reading, preprocessing, queued, in a pass); beyond: wait
    queue_wait_s: float = 1.0  # longest a request beyond max_queue waits for a slot; then 503 (admission.py)
    deadline_s: float = 10.0  # from a complete body to the answer; beyond: 503
    body_timeout_s: float = 30.0  # to receive a whole request body; beyond: 408
    header_timeout_s: float = 10.0  # to send a complete request head after connecting or a response
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 256  # open connections per worker; beyond: 503 and close
    max_header_kb: int = 16  # request line + headers
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)  # empty: any Host header
    prediction_log: str | None = None  # JSON lines, one per prediction (monitor/log.py); None: off
    metrics: bool = True  # GET /metrics (web/metrics.py)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


@lru_cache(maxsize=1)
def settings_from_env() -> Settings:
    """The settings main() put in the environment (worker processes start from a fresh import)."""
    raw = json.loads(os.environ.get(SETTINGS_ENV, "{}"))
    return Settings(**{**raw, "allowed_hosts": tuple(raw.get("allowed_hosts", ()))})


DEFAULTS = Settings()
