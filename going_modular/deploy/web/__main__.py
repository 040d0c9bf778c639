"""Web service: FoodVision as a JSON HTTP API (FastAPI + uvicorn) that holds under overload.

    python -m going_modular.deploy.web --host 127.0.0.1 --port 8000        # the shipped Mini int8 bundle
    python -m going_modular.deploy.web --model checkpoints/effnet_lite0_foodvision_mini.pth --workers 2
    (python -m going_modular.deploy.serve is the same command)

    curl -F file=@pizza.jpg http://127.0.0.1:8000/predict              # multipart upload
    curl --data-binary @pizza.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict   # raw bytes

Endpoints: POST /predict -> {"label", "prob", "probs", "seconds", ...}; POST /predict/batch
(multipart, several `files`); GET /health/live (alias /health) answered from the event loop even
when saturated; GET /health/ready (model, runtime and bundle loaded, batching counters); GET /
points to the docs (/docs and /redoc work offline) and the schema (/openapi.json).

Under load, concurrent requests share forward passes (--max-batch, --max-wait-ms); beyond
--max-queue requests in progress a request waits up to --queue-wait-s for a slot, then gets a
503 with Retry-After, and a request not answered within --deadline-s gets a 503 too.
Every error body is {"detail": "..."}.
Monitoring: every answer names its model (model_id, precision) and carries a request_id (also the
X-Request-ID header); GET /metrics serves Prometheus metrics of every worker (web/metrics.py,
--no-metrics turns it off); --prediction-log PATH appends one JSON line per prediction
(monitor/log.py), all workers to the same file.
SIGTERM stops accepting connections and finishes the requests in flight before exiting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from going_modular.deploy import cli
from going_modular.deploy.predictor import add_model_args, predictor_from_args
from going_modular.deploy.web.app import create_app, serving_process
from going_modular.deploy.web.guards import GuardedH11Protocol
from going_modular.deploy.web.metrics import multiprocess_dir
from going_modular.deploy.web.settings import DEFAULTS, SETTINGS_ENV, Settings, settings_from_env


def get_args_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on all interfaces")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes, each with its own model")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_args(parser)
    monitoring = parser.add_argument_group("monitoring")
    monitoring.add_argument("--prediction-log", default=None, metavar="PATH",
                            help="append one JSON line per prediction (monitor/log.py); default: off")
    monitoring.add_argument("--no-metrics", dest="metrics", action="store_false",
                            help="no GET /metrics (Prometheus; on by default)")
    batching = parser.add_argument_group("batching and admission control")
    batching.add_argument("--max-batch", type=int, default=d.max_batch, help="images in one forward pass")
    batching.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                          help="longest a batch waits for requests that are still preprocessing")
    batching.add_argument("--max-queue", type=int, default=d.max_queue,
                          help="requests in progress per worker; beyond it a request waits (--queue-wait-s)")
    batching.add_argument("--queue-wait-s", type=float, default=d.queue_wait_s,
                          help="longest a request beyond --max-queue waits for a slot, then 503 + Retry-After "
                               "(0: at once)")
    batching.add_argument("--deadline-s", type=float, default=d.deadline_s,
                          help="a request not answered this long after its body arrived gets 503")
    limits = parser.add_argument_group("request and connection limits")
    limits.add_argument("--max-body-mb", "--max-mb", type=float, default=d.max_body_mb, help="largest request body")
    limits.add_argument("--max-batch-files", type=int, default=d.max_batch_files, help="files per /predict/batch")
    limits.add_argument("--batch-megapixels", type=float, default=d.batch_megapixels,
                        help="decoded pixels per /predict/batch request, all files together")
    limits.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s, help="to receive a whole body")
    limits.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s,
                        help="to send a complete request head (after connecting or after a response)")
    limits.add_argument("--keep-alive-s", type=int, default=d.keep_alive_s, help="idle keep-alive connections close")
    limits.add_argument("--max-connections", type=int, default=d.max_connections,
                        help="open connections per worker; beyond it: 503 and close")
    limits.add_argument("--max-header-kb", type=int, default=d.max_header_kb, help="request line + headers")
    limits.add_argument("--allowed-hosts", nargs="+", default=[], metavar="HOST",
                        help="accept only these Host headers ('*.example.com' allowed); default: any")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = set(Settings.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in names}
    return Settings(**given | {"allowed_hosts": tuple(args.allowed_hosts)})


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if not args.metrics:
        return serve(args)
    with multiprocess_dir():  # before any app is built: the metrics' storage is chosen then
        return serve(args)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = settings_from_args(args)
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    settings_from_env.cache_clear()
    # Loaded before the server starts, so a bad bundle is a one-line error (cli.run), not a
    # traceback from uvicorn's startup.
    predictor = predictor_from_args(args)
    if args.workers > 1:
        del predictor  # each worker loads its own
        os.environ[SETTINGS_ENV + "_MODEL"] = json.dumps({"model": str(args.model), "threads": args.threads})
        app = "going_modular.deploy.web.app:app_from_env"
    else:
        app = create_app(predictor, settings)
        serving_process()
    uvicorn.run(app, factory=args.workers > 1, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level, http=GuardedH11Protocol,
                timeout_keep_alive=settings.keep_alive_s,
                h11_max_incomplete_event_size=settings.max_header_kb * 1024,
                # SIGTERM: let the requests in flight finish (body + deadline), then exit anyway.
                timeout_graceful_shutdown=int(settings.body_timeout_s + settings.deadline_s) + 1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
