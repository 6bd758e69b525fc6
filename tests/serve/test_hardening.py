"""Hostile requests: decompression bombs, slow decodes, floods, cross-site pages, disk spooling, error bodies."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from radgen.serve import ReportService, ServeSettings, create_app
from tests.data import bombs
from tests.serve.tiny_model import png_bytes, radiograph

LOCAL = "http://127.0.0.1:8000"
BOMBS = {
    "png": bombs.png_bomb, "jpeg": bombs.jpeg_bomb, "dicom": bombs.dicom_header_bomb,
    "jpeg-dicom": bombs.dicom_jpeg_bomb, "rle-dicom": bombs.dicom_rle_bomb, "deflate-dicom": bombs.dicom_deflate_bomb,
}


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service, ServeSettings(max_upload_bytes=4_000_000)), base_url=LOCAL,
                    raise_server_exceptions=False) as test_client:
        yield test_client


def post(client, data: bytes, headers=None, **form):
    return client.post("/v1/reports", files={"file": ("x", data, "application/octet-stream")}, data=form, headers=headers or {})


@pytest.mark.parametrize("kind", list(BOMBS))
def test_each_decompression_bomb_with_heatmap_is_a_fast_422(client, kind):
    data = BOMBS[kind]()
    assert len(data) < 4_000_000
    started = time.perf_counter()
    response = post(client, data, heatmap="true")
    assert response.status_code == 422, response.text
    assert "over the limit of 40,000,000" in response.json()["detail"] or "deflated DICOM expands past" in response.json()["detail"]
    assert time.perf_counter() - started < 5  # refused from the header: no decode, no model


def test_heatmap_is_drawn_on_a_bounded_preview(client):
    big = radiograph(size=96).resize((1200, 900))
    body = post(client, png_bytes(big), heatmap="true").json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap"])))
    assert overlay.size == (512, 384)  # longer side 512, aspect kept
    assert all(Image.open(io.BytesIO(base64.b64decode(s["heatmap"]))).size == (512, 384) for s in body["sentences"])


def test_every_error_body_is_json(client, service, monkeypatch):
    too_big = post(client, b"\x89PNG" + b"\0" * 5_000_000)  # refused by the body limit while streaming
    assert too_big.status_code == 413 and too_big.json() == {"detail": "upload too large: the limit is 4000000 bytes"}
    assert client.get("/missing").json() == {"detail": "Not Found"}
    assert client.get("/static/missing.js").headers["content-type"] == "application/json"
    bad_form = client.post("/v1/reports", content=b"abc", headers={"content-type": "multipart/form-data"})
    assert bad_form.status_code == 400 and "detail" in bad_form.json()

    def explode(data, heatmap=False):
        raise RuntimeError("secret internals at 0x7f00")

    monkeypatch.setattr(service, "prepare", explode)
    crashed = post(client, png_bytes())
    assert crashed.status_code == 500
    assert crashed.json() == {"detail": "internal server error; the server log has the details"}


def test_host_and_origin_checks(client):
    rebinding = client.get("/v1/model", headers={"host": "evil.example:8000"})
    assert rebinding.status_code == 400 and "unknown Host header" in rebinding.json()["detail"]
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert client.get("/health", headers={"host": host}).status_code == 200
    cross_site = post(client, png_bytes(), headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403 and "cross-origin" in cross_site.json()["detail"]
    assert post(client, png_bytes(), headers={"origin": "null"}).status_code == 403
    assert post(client, png_bytes(), headers={"origin": LOCAL}).status_code == 200  # the page itself


def test_security_headers_and_no_server_path_in_the_card(client):
    page = client.get("/")
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "content-security-policy" not in client.get("/docs").headers  # Swagger UI loads from a CDN
    model = client.get("/v1/model")
    assert model.headers["cache-control"] == "no-store"
    assert "/" not in model.json()["path"] and model.json()["path"] == "tiny_radgen_model"
    assert post(client, png_bytes()).json()["model"]["path"] == "tiny_radgen_model"


def test_uploads_stay_in_memory(client, monkeypatch):
    from tempfile import SpooledTemporaryFile

    rolled = []
    original = SpooledTemporaryFile.rollover
    monkeypatch.setattr(SpooledTemporaryFile, "rollover", lambda self: (rolled.append(True), original(self))[1])
    padded = png_bytes() + b"\0" * 2_500_000  # PNG readers ignore bytes after IEND; > the parser's 1 MB default
    assert post(client, padded).status_code == 200
    assert rolled == []


class _SlowDecode(ReportService):
    """Decoding blocks until the test opens the gate; counts how many decodes started."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate, self.started = threading.Event(), 0

    def prepare(self, data, heatmap=False):
        self.started += 1
        self.gate.wait(5)
        return super().prepare(data, heatmap)


def test_timeout_covers_decoding_and_floods_are_refused_before_decoding(model_dir):
    from radgen.generate.decode import load_model

    service = _SlowDecode(load_model(model_dir), model_dir=model_dir)
    app = create_app(service, ServeSettings(max_batch=1, max_queue=1, timeout_s=0.5, decode_workers=1))
    files = {"file": ("x.png", png_bytes(), "image/png")}

    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as client:
                started = time.perf_counter()
                first = asyncio.create_task(client.post("/v1/reports", files=files))  # decoding, blocked
                second = asyncio.create_task(client.post("/v1/reports", files=files))  # waits for the decoder
                await asyncio.sleep(0.2)
                third = await client.post("/v1/reports", files=files)  # 2 in flight = max_queue + max_batch
                assert third.status_code == 503 and third.headers["retry-after"] == "2"
                assert (await first).status_code == 504 and (await second).status_code == 504
                assert time.perf_counter() - started < 2.5  # answered at the timeout, not when decoding ends
                service.gate.set()
                await asyncio.sleep(0.3)
                assert service.started == 1  # the second never started: its deadline passed while it waited
                ok = await client.post("/v1/reports", files=files)
                assert ok.status_code == 200, ok.text

    try:
        asyncio.run(main())
    finally:
        service.gate.set()


def test_cli_rejects_nan_limits_and_truncated_weights(model_dir, tmp_path, capsys):
    import shutil

    from radgen.cli import main

    assert main(["serve", "--model", str(model_dir), "--max-upload-mb", "nan"]) == 2
    assert "--max-upload-mb must be positive, got nan" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["serve", "--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("radgen: error: ") and "model.safetensors: unreadable safetensors file" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_access_log_drops_query_strings():
    from radgen.serve.cli import _drop_query_strings

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/v1/model?token=s3cret&patient=Doe", "1.1", 200), None)
    assert _drop_query_strings(record)
    assert "s3cret" not in record.getMessage() and "/v1/model HTTP/1.1" in record.getMessage()
