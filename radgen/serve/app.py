"""The FastAPI app: REST API, health check, OpenAPI spec and the one-page web UI.

    POST /v1/reports   multipart: file=<PNG|JPEG|DICOM bytes>, heatmap=true|false, indication=<text>,
                       lateral=<PNG|JPEG|DICOM bytes> (the study's lateral view; both optional)
                       → {findings, impression, section, sentences: [{text, confidence}], confidence,
                          lateral_read, heatmap (base64 PNG, only when asked), model: {card}}
    GET  /health       → {status, model, queue: {waiting, max_queue, max_batch}}
    GET  /v1/model     → the model card
    GET  /             → static page (radgen/serve/static/, no external resources: works offline)
    GET  /docs, /openapi.json (FastAPI)

Errors are JSON {"detail": "..."} (all of them: radgen.serve.security rewrites the plain-text
replies of the framework) with: 400 unknown Host, 401 bad/missing bearer token (when a token is
set), 403 cross-origin POST, 413 upload too large, 415 not PNG/JPEG/DICOM by content, 422
undecodable image, image over the pixel budget or DICOM without pixels, 503 too many requests in
flight, 504 not done within --timeout.

Memory per request is bounded: the upload (at most two images, each within --max-upload-bytes) is
read in memory (never spooled to disk), at most
`max_queue + max_batch` requests are in flight (more get 503 before their image is decoded),
decoding runs on `decode_workers` threads under the pixel budget and inside the request's
timeout, and a queued request keeps only its model tensor (plus a <= 512 px preview when a heatmap
was asked for), not the decoded image.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp

from radgen import __version__
from radgen.errors import DataError
from radgen.serve.inference import ReportService, UnsupportedMediaError
from radgen.serve.queue import BatchQueue, QueueFullError
from radgen.serve.security import LOOPBACK_HOSTS, SecurityMiddleware

logger = logging.getLogger("radgen.serve")
STATIC_DIR = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small form fields
IMAGES_PER_REQUEST = 2  # the frontal view and, optionally, the lateral
# a clinical indication is a phrase; the model keeps its first words (model.context.max_words)
MAX_INDICATION_CHARS = 500


@dataclass
class ServeSettings:
    token: str | None = None
    # 20: on 2 CPU cores bigger batches decode more reports a second; with 20 clients the shipped
    # model's p95 was 7.3 s at 20 against 9.4 s at 8, and peak memory stayed 2.2 GB under
    # benchmarks/serve_adversarial.py (docs/benchmarks.md, "bf16 by default on CPUs that compute it")
    max_batch: int = 20
    max_queue: int = 32
    timeout_s: float = 60.0
    max_upload_bytes: int = 20 * 1024 * 1024
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS  # Host header names served; None: any
    decode_workers: int = 2  # images decoded at once (each up to the pixel budget)
    # Under load, how long a batch waits for the callers of the batch before it to come back; at an
    # idle server, how long it takes in a burst of requests that arrive < burst_gap_s apart
    # (radgen.serve.queue)
    gather_window_s: float = 0.3
    burst_gap_s: float = 0.05


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Around FastAPI's whole stack, so its plain-text 413/500 replies pass through it too.
        settings: ServeSettings = self.state.settings
        return SecurityMiddleware(super().build_middleware_stack(), settings.allowed_hosts, settings.max_upload_bytes)


def create_app(service: ReportService, settings: ServeSettings | None = None) -> FastAPI:
    """Build the app around a loaded ReportService. The batch worker starts with the app's lifespan."""
    settings = settings or ServeSettings()
    queue = BatchQueue(service.run_batch, max_batch=settings.max_batch, max_queue=settings.max_queue,
                       gather_window_s=settings.gather_window_s, burst_gap_s=settings.burst_gap_s)
    decoders = concurrent.futures.ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="radgen-decode")
    capacity = settings.max_queue + settings.max_batch  # requests in flight: decoding, queued or generating
    in_flight = 0
    # The multipart parser spools a file part to a temporary file past 1 MB; an upload (PHI in a
    # DICOM header) must stay in memory, and the body limit below already bounds its size.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + MULTIPART_OVERHEAD)
    body_limit = settings.max_upload_bytes * IMAGES_PER_REQUEST + MULTIPART_OVERHEAD

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await queue.start()
        logger.info("radgen serve: model %s ready (max batch %d, queue %d, timeout %.0f s, token %s)",
                    service.card["name"], settings.max_batch, settings.max_queue, settings.timeout_s,
                    "required" if settings.token else "off")
        yield
        await queue.stop()
        decoders.shutdown(wait=False, cancel_futures=True)

    # max_body_size: answered with 413 while the body streams in (Content-Length or chunked).
    app = _App(
        title="radgen", version=__version__, lifespan=lifespan,
        max_body_size=body_limit,
        description="Draft chest X-ray reports from images (PNG/JPEG/DICOM). Research software: NOT for clinical use.",
    )
    app.state.service, app.state.queue, app.state.settings = service, queue, settings
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, err: Exception) -> JSONResponse:
        # Type only: an exception's text may quote request content.
        logger.error("radgen serve: internal error %s", type(err).__name__)
        return JSONResponse({"detail": "internal server error; the server log has the details"}, status_code=500)

    def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.card["name"], "version": __version__,
                "queue": {"waiting": queue.waiting, "max_queue": settings.max_queue, "max_batch": settings.max_batch,
                          "batches_run": queue.batches_run, "reports_generated": queue.jobs_run, "largest_batch": queue.largest_batch,
                          "busy_s": round(queue.busy_s, 3)},
                "auth": settings.token is not None}

    @app.get("/v1/model", dependencies=[Depends(check_token)])
    async def model_info() -> dict[str, Any]:
        return service.card

    @app.post("/v1/reports", dependencies=[Depends(check_token)])
    async def create_report(file: UploadFile = File(..., description="PNG, JPEG or DICOM (Part 10) image"),
                            heatmap: bool = Form(False, description="also return an attention overlay (base64 PNG)"),
                            indication: str = Form("", max_length=MAX_INDICATION_CHARS,
                                                   description="the study's clinical indication, e.g. 'chest pain' (optional)"),
                            lateral: UploadFile | None = File(None, description="the study's lateral view, PNG, JPEG or DICOM "
                                                              "(optional): a grounded model's finding head reads it next to the frontal")) -> dict[str, Any]:
        nonlocal in_flight
        started = time.perf_counter()
        data = await file.read(settings.max_upload_bytes + 1)
        await file.close()  # drop the parser's in-memory copy now, not when the request ends
        lateral_data = None
        if lateral is not None:
            lateral_data = await lateral.read(settings.max_upload_bytes + 1)
            await lateral.close()
        size = len(data) + len(lateral_data or b"")
        for what, content in (("upload", data), ("lateral upload", lateral_data)):
            if content is not None and len(content) > settings.max_upload_bytes:
                raise HTTPException(413, f"{what} too large: the limit is {settings.max_upload_bytes} bytes an image")
        # Admission before decoding: --max-queue bounds how many uploads are held, not only how
        # many decoded images wait for the model.
        if in_flight >= capacity:
            raise HTTPException(503, "server busy: the request queue is full; retry in a few seconds", headers={"Retry-After": "2"})
        in_flight += 1
        deadline = time.monotonic() + settings.timeout_s
        try:
            prepared = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(decoders, _prepare_before, service, data, heatmap, deadline, indication,
                                                           lateral_data),
                timeout=settings.timeout_s)
            del data, lateral_data
            result = await queue.submit(prepared, timeout=max(0.0, deadline - time.monotonic()))
        except UnsupportedMediaError as err:
            raise HTTPException(415, str(err)) from None
        except DataError as err:
            # The message names the problem (e.g. "DICOM has no PixelData"), never header values.
            raise HTTPException(422, str(err)) from None
        except QueueFullError:
            raise HTTPException(503, "server busy: the request queue is full; retry in a few seconds",
                                headers={"Retry-After": "2"}) from None
        except TimeoutError:
            raise HTTPException(504, f"decoding and report generation took longer than {settings.timeout_s:g} s; retry later") from None
        finally:
            in_flight -= 1
        # Sizes, kinds and timings only: never file names or DICOM header values (patient data).
        logger.info("radgen serve: %s %d bytes → report in %.2f s", prepared.kind, size, time.perf_counter() - started)
        return {**result, "model": service.card}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _prepare_before(service: ReportService, data: bytes, heatmap: bool, deadline: float, indication: str = "",
                    lateral: bytes | None = None) -> Any:
    """Decode on a decoder thread, unless the caller's deadline passed while the upload waited."""
    if time.monotonic() > deadline:
        raise TimeoutError
    return service.prepare(data, heatmap, indication, lateral)
