"""The FastAPI app: REST API, health check, OpenAPI spec and the one-page web UI.

    POST /v1/reports   multipart: file=<PNG|JPEG|DICOM bytes>, heatmap=true|false
                       → {findings, impression, section, sentences: [{text, confidence}], confidence,
                          heatmap (base64 PNG, only when asked), model: {card}}
    GET  /health       → {status, model, queue: {waiting, max_queue, max_batch}}
    GET  /v1/model     → the model card
    GET  /             → static page (radgen/serve/static/, no external resources: works offline)
    GET  /docs, /openapi.json (FastAPI)

Errors are JSON {"detail": "..."} with: 401 bad/missing bearer token (when a token is set),
413 upload too large, 415 not PNG/JPEG/DICOM by content, 422 undecodable image or DICOM without
pixels, 503 queue full, 504 generation timed out.
"""

from __future__ import annotations

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
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from radgen import __version__
from radgen.errors import DataError
from radgen.serve.inference import ReportService, UnsupportedMediaError
from radgen.serve.queue import BatchQueue, QueueFullError

logger = logging.getLogger("radgen.serve")
STATIC_DIR = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small form fields


@dataclass
class ServeSettings:
    token: str | None = None
    max_batch: int = 8
    max_queue: int = 32
    timeout_s: float = 60.0
    max_upload_bytes: int = 20 * 1024 * 1024


def create_app(service: ReportService, settings: ServeSettings | None = None) -> FastAPI:
    """Build the app around a loaded ReportService. The batch worker starts with the app's lifespan."""
    settings = settings or ServeSettings()
    queue = BatchQueue(service.run_batch, max_batch=settings.max_batch, max_queue=settings.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await queue.start()
        logger.info("radgen serve: model %s ready (max batch %d, queue %d, timeout %.0f s, token %s)",
                    service.card["name"], settings.max_batch, settings.max_queue, settings.timeout_s,
                    "required" if settings.token else "off")
        yield
        await queue.stop()

    # max_body_size: FastAPI/Starlette answer 413 while the body streams in (Content-Length or
    # chunked), before the multipart parser buffers a huge upload to disk.
    app = FastAPI(
        title="radgen", version=__version__, lifespan=lifespan,
        max_body_size=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        description="Draft chest X-ray reports from images (PNG/JPEG/DICOM). Research software: NOT for clinical use.",
    )
    app.state.service, app.state.queue, app.state.settings = service, queue, settings
    bearer = HTTPBearer(auto_error=False)

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
                          "batches_run": queue.batches_run, "reports_generated": queue.jobs_run, "largest_batch": queue.largest_batch},
                "auth": settings.token is not None}

    @app.get("/v1/model", dependencies=[Depends(check_token)])
    async def model_info() -> dict[str, Any]:
        return service.card

    @app.post("/v1/reports", dependencies=[Depends(check_token)])
    async def create_report(file: UploadFile = File(..., description="PNG, JPEG or DICOM (Part 10) image"),
                            heatmap: bool = Form(False, description="also return an attention overlay (base64 PNG)")) -> dict[str, Any]:
        started = time.perf_counter()
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is {settings.max_upload_bytes} bytes")
        try:
            prepared = await run_in_threadpool(service.prepare, data, heatmap)
        except UnsupportedMediaError as err:
            raise HTTPException(415, str(err)) from None
        except DataError as err:
            # The message names the problem (e.g. "DICOM has no PixelData"), never header values.
            raise HTTPException(422, str(err)) from None
        try:
            result = await queue.submit(prepared, timeout=settings.timeout_s)
        except QueueFullError:
            raise HTTPException(503, "server busy: the request queue is full; retry in a few seconds",
                                headers={"Retry-After": "2"}) from None
        except TimeoutError:
            raise HTTPException(504, f"report generation took longer than {settings.timeout_s:g} s; retry later") from None
        except DataError as err:
            raise HTTPException(422, str(err)) from None
        # Sizes, kinds and timings only: never file names or DICOM header values (patient data).
        logger.info("radgen serve: %s %d bytes → report in %.2f s", prepared.kind, len(data), time.perf_counter() - started)
        return {**result, "model": service.card}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
