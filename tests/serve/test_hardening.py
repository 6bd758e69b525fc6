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
from tests.serve.waiting import until

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
    # past the body limit (two images of 4 MB and the form's allowance): refused while streaming
    too_big = post(client, b"\x89PNG" + b"\0" * 9_000_000)
    assert too_big.status_code == 413 and too_big.json() == {"detail": "upload too large: the limit is 4000000 bytes an image"}
    one_too_big = post(client, b"\x89PNG" + b"\0" * 5_000_000)  # within the body limit, one image over: refused by the handler
    assert one_too_big.status_code == 413 and one_too_big.json() == {"detail": "upload too large: the limit is 4000000 bytes an image"}
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


# A decode blocked on the gate gives up after this long, so a server that waits for decoding fails
# the test (the 504 would carry `decoded` set) instead of hanging it.
GATE_LIMIT_S = 60.0
# The request timeout. Nothing in the test races it except the `ok` request at the end (decode + a
# tiny model's generate, ~0.1 s idle) and the third request's admission check right after the second
# is admitted; 5 s leaves room for a machine whose 2 cores are busy with a training job.
TIMEOUT_S = 5.0


class _SlowDecode(ReportService):
    """Decoding blocks until the test opens the gate; counts the decodes that started and notes when one ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate, self.entered, self.decoded = threading.Event(), threading.Event(), threading.Event()
        self.started = 0

    def prepare(self, *args, **kwargs):  # whatever the app passes (data, heatmap, indication, lateral) goes through
        self.started += 1
        self.entered.set()
        self.gate.wait(GATE_LIMIT_S)
        self.decoded.set()
        return super().prepare(*args, **kwargs)


def test_timeout_covers_decoding_and_floods_are_refused_before_decoding(model_dir, monkeypatch):
    import concurrent.futures

    import radgen.serve.app as serve_app
    from radgen.generate.decode import load_model

    # A request is admitted (counted in flight) in the same step that hands its upload to the decoder
    # pool, so counting those hand-offs tells the test when both uploads are in flight.
    admitted = []
    submit = concurrent.futures.ThreadPoolExecutor.submit

    def counting_submit(self, fn, /, *args, **kwargs):
        if fn is serve_app._prepare_before:
            admitted.append(time.monotonic())
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "submit", counting_submit)
    service = _SlowDecode(load_model(model_dir), model_dir=model_dir)
    app = create_app(service, ServeSettings(max_batch=1, max_queue=1, timeout_s=TIMEOUT_S, decode_workers=1))
    files = {"file": ("x.png", png_bytes(), "image/png")}

    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as client:
                first = asyncio.create_task(client.post("/v1/reports", files=files))  # decoding, blocked
                second = asyncio.create_task(client.post("/v1/reports", files=files))  # waits for the one decoder
                await until(lambda: len(admitted) == 2 and service.entered.is_set(),
                             "both uploads admitted and the first one decoding")
                third = await client.post("/v1/reports", files=files)  # 2 in flight = max_queue + max_batch
                assert third.status_code == 503 and third.headers["retry-after"] == "2"
                assert len(admitted) == 2  # refused before it reached a decoder
                assert (await first).status_code == 504 and (await second).status_code == 504
                # answered at the timeout while the decode was still blocked, not when decoding ended
                assert not service.decoded.is_set() and service.started == 1
                service.gate.set()
                ok = await client.post("/v1/reports", files=files)
                assert ok.status_code == 200, ok.text
                # The one decoder thread takes jobs in order, so by the time `ok` was decoded the second
                # upload's job had been dropped: its deadline passed while it waited, and it never decoded.
                assert service.started == 2

    try:
        asyncio.run(main())
    finally:
        service.gate.set()


def test_cli_rejects_nan_limits_and_truncated_weights(model_dir, tmp_path, capsys):
    import shutil

    from radgen.cli import main

    assert main(["serve", "--model", str(model_dir), "--max-upload-mb", "nan"]) == 2
    assert "--max-upload-mb must be positive, got nan" in capsys.readouterr().err
    for wait in ("nan", "-1", "20000"):
        assert main(["serve", "--model", str(model_dir), "--gather-ms", wait]) == 2
        assert f"--gather-ms must be between 0 and 10000, got {float(wait)}" in capsys.readouterr().err
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
