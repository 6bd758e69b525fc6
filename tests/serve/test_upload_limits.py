"""Upload limits at their edges: exactly max_upload_bytes is accepted, one byte more is 413, and a
small file declaring gigapixels is refused (422) by Pillow's bomb check, not decoded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from radgen.serve import ServeSettings, create_app
from tests.data.test_image_limits import png_declaring
from tests.serve.tiny_model import png_bytes

LIMIT = 150_000


@pytest.fixture(scope="module")
def client(service):
    # the server answers only to loopback Host names (radgen.serve.security)
    with TestClient(create_app(service, ServeSettings(max_upload_bytes=LIMIT)), base_url="http://127.0.0.1") as test_client:
        yield test_client


def post(client, data: bytes):
    return client.post("/v1/reports", files={"file": ("x.png", data, "application/octet-stream")})


def padded_png(size: int) -> bytes:
    # bytes after IEND are ignored by PNG decoders, so the image stays valid at any padded size
    image = png_bytes()
    assert len(image) < size
    return image + b"\0" * (size - len(image))


def test_upload_of_exactly_the_limit_is_accepted(client):
    response = post(client, padded_png(LIMIT))
    assert response.status_code == 200, response.text
    assert {"findings", "impression", "confidence"} <= response.json().keys()


def test_one_byte_over_the_limit_is_413(client):
    response = post(client, padded_png(LIMIT + 1))
    assert response.status_code == 413
    assert f"{LIMIT} bytes" in response.json()["detail"]


def test_declared_gigapixel_png_is_422(client):
    response = post(client, png_declaring(20_000, 20_000))
    assert response.status_code == 422
    assert "pixels" in response.json()["detail"]
