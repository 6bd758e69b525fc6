"""The API's documented contract (docs/serve.md): health fields, auth challenge, error bodies, in-memory uploads."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from radgen.serve import ServeSettings, create_app
from tests.serve.tiny_model import png_bytes
from tests.serve.waiting import until

LOCAL = "http://127.0.0.1:8000"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def _files(data: bytes = b"", name: str = "x.png"):
    return {"file": (name, data or png_bytes(), "application/octet-stream")}


def test_health_has_exactly_the_documented_fields(service):
    documented = re.search(r"`GET /health` → `(\{.*?\})`", DOCS.read_text(), re.S).group(1)
    queue_fields = set(re.findall(r'"(\w+)"', re.search(r'"queue": \{(.*?)\}', documented, re.S).group(1)))
    top_fields = set(re.findall(r'"(\w+)"', re.sub(r'"queue": \{.*?\}', '"queue"', documented, flags=re.S)))
    with TestClient(create_app(service, ServeSettings(token="s3cret")), base_url=LOCAL) as client:
        assert client.post("/v1/reports", files=_files(), headers={"Authorization": "Bearer s3cret"}).status_code == 200
        health = client.get("/health").json()  # open without the token
    assert set(health) == top_fields - {"ok"}
    assert set(health["queue"]) == queue_fields
    assert health["status"] == "ok" and health["model"] == service.card["name"] and health["auth"] is True
    from radgen import __version__

    assert health["version"] == __version__
    assert health["queue"]["reports_generated"] == 1 and health["queue"]["batches_run"] == 1
    assert health["queue"]["largest_batch"] == 1 and health["queue"]["waiting"] == 0
    assert health["queue"]["busy_s"] > 0  # one report was generated


def test_a_missing_token_gets_the_bearer_challenge(service):
    with TestClient(create_app(service, ServeSettings(token="s3cret")), base_url=LOCAL) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.get("/v1/model", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"  # RFC 6750: the scheme to use
            assert response.json() == {"detail": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"}


class _Exploding:
    """A service whose image preparation fails with an unexpected error quoting the request."""

    card = {"name": "exploding"}

    def prepare(self, data, heatmap, indication, lateral=None):
        raise RuntimeError(f"secret patient detail {indication}")

    def run_batch(self, jobs):  # never reached
        raise AssertionError


def test_an_internal_error_is_json_and_logs_only_its_type(caplog):
    caplog.set_level(logging.ERROR)
    with TestClient(create_app(_Exploding()), base_url=LOCAL, raise_server_exceptions=False) as client:
        response = client.post("/v1/reports", files=_files(), data={"indication": "Jane Doe"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the server log has the details"}
    assert "RuntimeError" in caplog.text and "Jane Doe" not in caplog.text


def test_uploads_up_to_the_limit_stay_in_memory(service, monkeypatch):
    # A file part past starlette's spool size rolls over to a temporary file on disk: an upload (PHI in
    # a DICOM header) must not, up to the largest accepted upload.
    from starlette.formparsers import MultiPartParser

    monkeypatch.setattr(MultiPartParser, "spool_max_size", 1024 * 1024)  # starlette's own; other apps raised it
    rolled = []
    rollover = tempfile.SpooledTemporaryFile.rollover
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", lambda self: (rolled.append(1), rollover(self)))
    limit = 3 * 1024 * 1024  # over starlette's own 1 MiB spool size
    with TestClient(create_app(service, ServeSettings(max_upload_bytes=limit)), base_url=LOCAL) as client:
        response = client.post("/v1/reports", files=_files(b"\0" * limit, "x.bin"))
    assert response.status_code == 415, response.text  # admitted, then refused by content
    assert rolled == []


def test_sequential_requests_never_exhaust_the_capacity(service):
    # max_queue + max_batch = 2 requests in flight at once; one at a time, any number get through
    with TestClient(create_app(service, ServeSettings(max_batch=1, max_queue=1)), base_url=LOCAL) as client:
        codes = [client.post("/v1/reports", files=_files()).status_code for _ in range(4)]
        refused = [client.post("/v1/reports", files=_files(b"GIF89a", "x.gif")).status_code for _ in range(3)]
        codes.append(client.post("/v1/reports", files=_files()).status_code)
    assert codes == [200] * 5
    assert refused == [415] * 3  # a refused request leaves the in-flight count as it found it


def test_error_details_say_what_happened(service):
    with TestClient(create_app(service, ServeSettings(max_upload_bytes=1000)), base_url=LOCAL) as client:
        too_large = client.post("/v1/reports", files=_files(b"\0" * 1001, "x.bin"))
    assert too_large.status_code == 413
    assert too_large.json()["detail"].startswith("upload too large")


def test_openapi_lists_the_api_not_the_page(service):
    with TestClient(create_app(service), base_url=LOCAL) as client:
        paths = set(client.get("/openapi.json").json()["paths"])
    assert paths == {"/health", "/v1/model", "/v1/reports"}


@pytest.mark.parametrize("path", ["/", "/static/app.js"])
def test_the_page_and_its_script_are_served(service, path):
    with TestClient(create_app(service), base_url=LOCAL) as client:
        assert client.get(path).status_code == 200


# ------------------------------------------------------------------------- busy and slow replies

BUSY = "server busy: the request queue is full; retry in a few seconds"


class _Gated:
    """The real tiny model behind a gate the test opens; `entered` is set when a batch starts."""

    def __init__(self, service):
        self.inner, self.card = service, service.card
        self.gate, self.entered = threading.Event(), threading.Event()

    def prepare(self, data, heatmap, indication, lateral=None):
        return self.inner.prepare(data, heatmap, indication)

    def run_batch(self, jobs):
        self.entered.set()
        self.gate.wait(30)
        return self.inner.run_batch(jobs)


def _post(client):
    return client.post("/v1/reports", files=_files())


def _run(app, gated: _Gated, body) -> None:
    """Run `await body(client)` against the started app; the gate opens at the end whatever happens."""

    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as client:
                try:
                    await body(client)
                finally:
                    gated.gate.set()  # the worker must finish before the app shuts down

    try:
        asyncio.run(main())
    finally:
        gated.gate.set()


def test_the_capacity_is_whole_again_after_each_flood(service):
    # max_queue + max_batch = 2 in flight: one generating, one queued, the third refused; twice over
    gated = _Gated(service)
    app = create_app(gated, ServeSettings(max_batch=1, max_queue=1, timeout_s=60))

    async def flood(client):
        gated.gate.clear()
        gated.entered.clear()
        first = asyncio.create_task(_post(client))
        await until(gated.entered.is_set, "the first request generating")
        second = asyncio.create_task(_post(client))
        await until(lambda: app.state.queue.waiting == 1, "the second request queued")
        # refused on admission, before its bytes are looked at (admitted, these would get 415)
        third = await client.post("/v1/reports", files=_files(b"not an image", "x.bin"))
        assert third.status_code == 503 and third.json() == {"detail": BUSY} and third.headers["retry-after"] == "2"
        gated.gate.set()
        assert [(await first).status_code, (await second).status_code] == [200, 200]

    async def twice(client):
        await flood(client)
        await flood(client)

    _run(app, gated, twice)


def test_a_full_queue_behind_a_small_batch_gets_the_same_busy_reply(service):
    # max_batch 2 + max_queue 1 = 3 in flight admitted; the worker runs a batch of one, one waits,
    # so the third is admitted but finds the queue full: the queue's refusal, same reply as admission's.
    gated = _Gated(service)
    app = create_app(gated, ServeSettings(max_batch=2, max_queue=1, timeout_s=60))

    async def body(client):
        first = asyncio.create_task(_post(client))
        await until(gated.entered.is_set, "the first request generating")
        second = asyncio.create_task(_post(client))
        await until(lambda: app.state.queue.waiting == 1, "the second request queued")
        third = await _post(client)
        assert third.status_code == 503 and third.json() == {"detail": BUSY} and third.headers["retry-after"] == "2"
        gated.gate.set()
        assert [(await first).status_code, (await second).status_code] == [200, 200]

    _run(app, gated, body)


def test_a_slow_model_is_answered_504_at_the_requests_own_deadline(service):
    gated = _Gated(service)
    app = create_app(gated, ServeSettings(timeout_s=0.3))

    async def body(client):
        started = time.monotonic()
        late = await _post(client)
        elapsed = time.monotonic() - started
        assert late.status_code == 504
        assert late.json() == {"detail": "decoding and report generation took longer than 0.3 s; retry later"}
        assert elapsed < 0.8  # the wait for the model gets what is left of 0.3 s, not more

    _run(app, gated, body)
