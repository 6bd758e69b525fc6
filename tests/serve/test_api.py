"""REST API end to end through FastAPI's TestClient with a tiny saved model."""

from __future__ import annotations

import io
import logging

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import radgen
from radgen.serve import ServeSettings, create_app
from tests.serve.tiny_model import dicom_bytes, jpeg_bytes, png_bytes, radiograph

LOCAL = "http://127.0.0.1:8000"  # the server answers to loopback Host names only (DNS rebinding)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service, ServeSettings(max_upload_bytes=200_000)), base_url=LOCAL) as test_client:
        yield test_client


def post(client, data: bytes, name: str = "x.png", headers=None, **form):
    return client.post("/v1/reports", files={"file": (name, data, "application/octet-stream")}, data=form, headers=headers or {})


def test_png_report_shape_and_card(client):
    response = post(client, png_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["section"] == "findings"
    assert body["findings"] and body["impression"] == ""
    assert body["sentences"], "a non-empty report has at least one sentence"
    # Every sentence's text comes from the report, in order.
    joined = " ".join(s["text"] for s in body["sentences"]).replace(" ", "")
    assert joined == body["findings"].replace(" ", "")
    for sentence in body["sentences"]:
        assert 0.0 < sentence["confidence"] <= 1.0
    assert 0.0 < body["confidence"] <= 1.0
    assert "heatmap" not in body
    # the tiny radgen-small is grounded: the image head's probability per observation comes along
    from radgen.models.findings import DEFAULT_OBSERVATIONS

    assert set(body["finding_probs"]) == set(DEFAULT_OBSERVATIONS)
    assert all(0.0 <= p <= 1.0 for p in body["finding_probs"].values())
    assert set(body["findings_predicted"]) <= set(DEFAULT_OBSERVATIONS)
    card = body["model"]
    assert card["name"] == "radgen-small"
    assert card["trained_on"].startswith("nothing: random weights")  # from the test's model_card.json
    assert "NOT for clinical use" in card["disclaimer"]


def test_same_image_same_report_whatever_the_container(client, service):
    """PNG, JPEG and DICOM all decode; the PNG result equals the service called directly (no batching drift)."""
    direct = service.report_for_bytes(png_bytes())
    via_api = post(client, png_bytes()).json()
    assert via_api["findings"] == direct["findings"]
    assert via_api["confidence"] == pytest.approx(direct["confidence"], abs=1e-5)
    assert post(client, jpeg_bytes(), name="a.jpg").status_code == 200
    assert post(client, dicom_bytes(), name="a.dcm").status_code == 200


def test_content_is_sniffed_not_the_filename(client):
    response = post(client, b"GIF89a" + b"\0" * 300, name="chest.png")
    assert response.status_code == 415
    assert "PNG, JPEG or DICOM" in response.json()["detail"]
    # A real PNG named .txt is accepted.
    assert post(client, png_bytes(), name="notes.txt").status_code == 200


def test_corrupt_png_and_dicom_without_pixels_are_422(client):
    truncated = png_bytes()[:60]
    assert post(client, truncated).status_code == 422
    response = post(client, dicom_bytes(with_pixels=False), name="sr.dcm")
    assert response.status_code == 422
    assert "no pixel data" in response.json()["detail"]


def test_upload_over_the_limit_is_413(client):
    big = png_bytes() + b"\0" * 300_000  # past max_upload_bytes and the multipart allowance
    response = post(client, big)
    assert response.status_code == 413
    just_over = png_bytes() + b"\0" * (200_001 - len(png_bytes()))  # file over the limit, body within the allowance
    response = post(client, just_over)
    assert response.status_code == 413
    assert "200000 bytes" in response.json()["detail"]


def test_no_dicom_header_values_in_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    name = "Zyxwvut^Qwertyuiop"
    assert post(client, dicom_bytes(patient_name=name), name="p.dcm").status_code == 200
    assert post(client, dicom_bytes(patient_name=name, with_pixels=False), name="p.dcm").status_code == 422
    assert caplog.records, "the request log must have been captured"
    assert any("dicom" in record.getMessage() for record in caplog.records)
    for secret in ("Zyxwvut", "Qwertyuiop", "MRN-123456", "19700101"):
        assert secret not in caplog.text


def test_health_openapi_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["queue"]["max_batch"] == 20
    spec = client.get("/openapi.json").json()
    assert "/v1/reports" in spec["paths"]
    schema_ref = spec["paths"]["/v1/reports"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema_ref  # the multipart file field is documented
    assert client.get("/docs").status_code == 200
    page = client.get("/").text
    assert 'id="file-input"' in page and "/static/app.js" in page
    # Offline: the page and its assets load nothing from another host.
    for path in ("/", "/static/app.js", "/static/app.css"):
        text = client.get(path).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_bearer_token(service):
    with TestClient(create_app(service, ServeSettings(token="s3cret")), base_url=LOCAL) as client:
        assert post(client, png_bytes()).status_code == 401
        assert post(client, png_bytes(), headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/model").status_code == 401
        assert post(client, png_bytes(), headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200  # liveness stays open for load balancers


def test_heatmap_overlay_is_a_png_of_the_uploaded_size(client):
    import base64
    import io

    from PIL import Image

    from tests.serve.tiny_model import radiograph

    source = radiograph(size=80)
    response = post(client, png_bytes(source), heatmap="true")
    assert response.status_code == 200, response.text
    body = response.json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap"])))
    assert overlay.format == "PNG" and overlay.size == source.size and overlay.mode == "RGB"
    assert body["heatmap_method"] == "composed_attention"  # radgen-small: mapping-layer connector
    # One overlay per sentence, each a PNG of the upload's size.
    assert body["sentences"]
    for sentence in body["sentences"]:
        per_sentence = Image.open(io.BytesIO(base64.b64decode(sentence["heatmap"])))
        assert per_sentence.format == "PNG" and per_sentence.size == source.size
    # The overlay differs from the plain radiograph (something was painted on it).
    plain = source.convert("RGB")
    assert overlay.tobytes() != plain.tobytes()
    # The report is the same with or without the heatmap.
    assert body["findings"] == post(client, png_bytes(source)).json()["findings"]


def test_decompression_bomb_is_422_not_a_crash(client, monkeypatch):
    from PIL import Image

    from tests.serve.tiny_model import radiograph

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 96x96 test image is then "too many pixels"
    response = post(client, png_bytes(radiograph(size=96)))
    assert response.status_code == 422
    assert "pixels" in response.json()["detail"]


def test_serve_cli_rejects_bad_limits_before_loading(model_dir, capsys):
    from radgen.cli import main

    assert main(["serve", "--model", str(model_dir), "--max-batch", "0"]) == 2
    assert "--max-batch must be positive" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dir / "missing")]) == 2
    assert "missing: no such model folder or shipped model name" in capsys.readouterr().err


def test_indication_form_field_reaches_the_prompt_and_is_bounded(client, service, monkeypatch):
    seen = []
    original = service.model.generate

    def spy(**kwargs):
        seen.append(kwargs.get("contexts"))
        return original(**kwargs)

    monkeypatch.setattr(service.model, "generate", spy)
    assert post(client, png_bytes(), indication="Chest pain, XXXX-year-old").status_code == 200
    assert seen[-1] == ["Chest pain, XXXX-year-old"]  # cleaned into the prompt by the model (clean_context)
    assert post(client, png_bytes()).status_code == 200 and seen[-1] == [""]
    too_long = post(client, png_bytes(), indication="x" * 501)
    assert too_long.status_code == 422 and "indication" in too_long.text


def test_a_lateral_view_reaches_the_finding_head_and_is_checked_like_the_upload(client, service, model_dir):
    front, side = png_bytes(radiograph(seed=1)), png_bytes(radiograph(seed=2))
    both = client.post("/v1/reports", files={"file": ("pa.png", front, "application/octet-stream"),
                                             "lateral": ("lat.png", side, "application/octet-stream")})
    assert both.status_code == 200, both.text
    alone = post(client, front).json()
    assert both.json()["lateral_read"] is True and alone["lateral_read"] is False
    # the head's answer is the pipeline's for the same two views, and moves with the lateral
    pipe = radgen.load(str(model_dir), device="cpu")
    expected = pipe(Image.open(io.BytesIO(front)), lateral=Image.open(io.BytesIO(side)))["finding_probs"]
    assert both.json()["finding_probs"] == pytest.approx(expected, abs=1e-4)
    assert alone["finding_probs"] != pytest.approx(expected, abs=1e-4)

    # a bad lateral is refused as a bad upload is, and the message says which file
    wrong = client.post("/v1/reports", files={"file": ("pa.png", front, "application/octet-stream"),
                                              "lateral": ("lat.gif", b"GIF89a" + b"\0" * 300, "application/octet-stream")})
    assert wrong.status_code == 415 and wrong.json()["detail"].startswith("uploaded lateral file: unsupported file type")
    broken = client.post("/v1/reports", files={"file": ("pa.png", front, "application/octet-stream"),
                                               "lateral": ("lat.png", side[:60], "application/octet-stream")})
    assert broken.status_code == 422 and "lateral" in broken.json()["detail"]
    big = client.post("/v1/reports", files={"file": ("pa.png", front, "application/octet-stream"),
                                            "lateral": ("lat.png", side + b"\0" * 200_001, "application/octet-stream")})
    assert big.status_code == 413 and big.json()["detail"] == "lateral upload too large: the limit is 200000 bytes an image"
