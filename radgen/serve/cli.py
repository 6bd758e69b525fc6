"""`radgen serve`: the REST API + web page on one machine.

    radgen serve [--model NAME|DIR|RUN] [--host 127.0.0.1] [--port 8000] [--token TOKEN] [--max-batch 20] [--gather-ms 300]
                 [--timeout 60] [--max-queue 32] [--max-upload-mb 20] [--allowed-host NAME ...]
                 [--num-beams N] [--max-new-tokens N] [--dtype auto]

--model takes a shipped model's name (radgen-small), a model folder or a training run folder (its best/),
as `radgen generate` does; without it the shipped radgen-small (radgen/assets/default_model/) is served.
The token may also come from the RADGEN_TOKEN environment variable (keeps it out of `ps`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from radgen.config import INFERENCE_DTYPES
from radgen.demo import register as register_demo
from radgen.errors import RadgenError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from radgen.pipeline import resolve_model
    from radgen.serve.app import ServeSettings, create_app
    from radgen.serve.inference import ReportService
    from radgen.serve.security import LOOPBACK_HOSTS

    for name in ("max_batch", "max_queue", "timeout", "max_upload_mb"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:  # nan passes "<= 0" and then breaks int()
            raise RadgenError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not (math.isfinite(args.gather_ms) and 0 <= args.gather_ms <= 10_000):
        raise RadgenError(f"--gather-ms must be between 0 and 10000, got {args.gather_ms}")
    token = args.token or os.environ.get("RADGEN_TOKEN") or None
    loopback = args.host in LOOPBACK_HOSTS
    if not loopback and not token:
        print("radgen: warning: serving on a non-loopback address without --token; anyone on the network can use it",
              file=sys.stderr)
    # On loopback only this machine's names are served (a rebinding web page sends its own name);
    # on another address the names clients use are not known here, unless --allowed-host says.
    allowed_hosts = tuple(args.allowed_host) + (LOOPBACK_HOSTS if loopback else ()) if (loopback or args.allowed_host) else None
    model_dir = resolve_model(args.model)
    print(f"radgen: loading model from {model_dir}", file=sys.stderr)
    service = ReportService.from_directory(model_dir, dtype=args.dtype, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    settings = ServeSettings(token=token, max_batch=args.max_batch, max_queue=args.max_queue, timeout_s=args.timeout,
                             max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), allowed_hosts=allowed_hosts,
                             gather_window_s=args.gather_ms / 1000)
    app = create_app(service, settings)
    print(f"radgen: serving on http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    logging.getLogger("uvicorn.access").addFilter(_drop_query_strings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=True)
    return 0


def _drop_query_strings(record: logging.LogRecord) -> bool:
    """uvicorn's access line carries the full path; a query string may hold a token or identifiers."""
    if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
        record.args = (*record.args[:2], record.args[2].split("?", 1)[0], *record.args[3:])
    return True


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="REST API and web page that draft reports from images",
                                  description="Serve a model: POST /v1/reports, GET /health, web page at /, OpenAPI at /docs.")
    serve.add_argument("--model", default=None, metavar="NAME|DIR|RUN",
                       help="a shipped model name (radgen-small, the default), a save_pretrained folder or a training run "
                            "folder (uses RUN/best)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (or set RADGEN_TOKEN)")
    serve.add_argument("--max-batch", type=int, default=20, help="most requests decoded together in one batch")
    serve.add_argument("--gather-ms", type=float, default=300.0,
                       help="under load, how long a batch waits for the callers of the last batch once the model is free "
                            "(default 300; 0: no wait); at an idle server a lone request waits 50 ms for others")
    serve.add_argument("--max-queue", type=int, default=32, help="requests that may wait; more get 503")
    serve.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait for its report; then 504")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted image (the upload, and its lateral view); larger gets 413")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="a Host name clients may use (repeatable); default: 127.0.0.1, localhost, ::1 on a loopback "
                            "address, any name otherwise")
    serve.add_argument("--num-beams", type=int, default=None, help="beam size (default: the recipe's generate.num_beams)")
    serve.add_argument("--max-new-tokens", type=int, default=None, help="default: the recipe's generate.max_new_tokens")
    serve.add_argument("--dtype", default="auto", choices=INFERENCE_DTYPES,
                       help="decoder precision, as `radgen generate --dtype` (default auto: bfloat16 on a GPU or a CPU with native "
                            "bf16, float16 weights with fp32 arithmetic on other AVX2 x86-64 CPUs, else float32; int8 rewords "
                            "with batching, docs/serve.md)")
    serve.set_defaults(func=_serve)
    register_demo(subparsers)  # `radgen demo` lives in radgen/demo.py; registered with serve (same model default)
