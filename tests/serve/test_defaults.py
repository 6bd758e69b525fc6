"""The server's documented defaults are the ones it runs with, from the CLI and from the Python API.

docs/serve.md's synopsis is what users read; `radgen serve` parses its own flags, and `create_app`
without settings uses `ServeSettings()`. All three must agree, and the defaults must be the safe
ones: loopback Host names only, no token, the request line logged under the `radgen` logger.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radgen.cli import build_parser
from radgen.serve import ServeSettings, create_app
from radgen.serve.security import LOOPBACK_HOSTS
from tests.serve.tiny_model import png_bytes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def documented_defaults() -> dict[str, float]:
    synopsis = re.search(r"```bash\n(radgen serve .*?)```", DOCS.read_text(), re.S).group(1)
    found = dict(re.findall(r"\[--(max-batch|timeout|max-queue|max-upload-mb) ([\d.]+)\]", synopsis))
    assert set(found) == {"max-batch", "timeout", "max-queue", "max-upload-mb"}, synopsis
    return {name: float(value) for name, value in found.items()}


def test_cli_defaults_are_the_documented_ones():
    args = build_parser().parse_args(["serve"])
    docs = documented_defaults()
    assert (args.max_batch, args.timeout, args.max_queue, args.max_upload_mb) == (
        docs["max-batch"], docs["timeout"], docs["max-queue"], docs["max-upload-mb"])
    assert args.host == "127.0.0.1" and args.token is None


def test_python_api_defaults_are_the_cli_ones():
    settings, docs = ServeSettings(), documented_defaults()
    assert settings.max_batch == docs["max-batch"]
    assert settings.max_queue == docs["max-queue"]
    assert settings.timeout_s == docs["timeout"]
    assert settings.max_upload_bytes == docs["max-upload-mb"] * 1024 * 1024
    assert settings.token is None
    assert settings.allowed_hosts == LOOPBACK_HOSTS
    assert settings.decode_workers >= 1


@pytest.fixture(scope="module")
def default_client(service):
    with TestClient(create_app(service), base_url="http://127.0.0.1:8000") as client:
        yield client


def test_an_app_built_without_settings_runs_with_the_documented_limits(default_client):
    docs = documented_defaults()
    health = default_client.get("/health").json()
    assert health["queue"]["max_batch"] == docs["max-batch"]
    assert health["queue"]["max_queue"] == docs["max-queue"]
    assert health["auth"] is False
    # no token by default: a report is drafted without an Authorization header
    response = default_client.post("/v1/reports", files={"file": ("x.png", png_bytes(), "application/octet-stream")})
    assert response.status_code == 200, response.text


def test_an_app_built_without_settings_answers_loopback_names_only(default_client):
    assert default_client.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
    refused = default_client.get("/health", headers={"Host": "rebind.example:8000"})
    assert refused.status_code == 400


def test_upload_limit_default_is_enforced(service):
    # The default limit (20 MB) admits an upload just under it past the body check; one byte over gets
    # 413. The file is not an image, so an admitted one is refused later, by content (415).
    limit = int(documented_defaults()["max-upload-mb"] * 1024 * 1024)
    with TestClient(create_app(service), base_url="http://127.0.0.1:8000") as client:
        under = client.post("/v1/reports", files={"file": ("x.bin", b"\0" * limit, "application/octet-stream")})
        over = client.post("/v1/reports", files={"file": ("x.bin", b"\0" * (limit + 1), "application/octet-stream")})
    assert under.status_code == 415, under.text
    assert over.status_code == 413, over.text


def test_request_line_is_logged_under_the_radgen_logger(default_client, caplog):
    # Users tune radgen's verbosity through the "radgen" logger; the serve log must sit beneath it.
    caplog.set_level(logging.WARNING)  # root: a logger outside "radgen" would not reach INFO
    caplog.set_level(logging.INFO, logger="radgen")
    response = default_client.post("/v1/reports", files={"file": ("x.png", png_bytes(), "application/octet-stream")})
    assert response.status_code == 200
    lines = [r for r in caplog.records if "bytes → report" in r.getMessage()]
    assert lines and all(r.name.startswith("radgen.") for r in lines)
    seconds = float(re.search(r"report in ([\d.]+) s", lines[-1].getMessage()).group(1))
    assert 0 <= seconds < 60  # this request's own time


def test_serve_decodes_in_the_dtype_asked_for(model_dir):
    import torch

    from radgen.serve import ReportService

    assert build_parser().parse_args(["serve"]).dtype == "auto"
    assert build_parser().parse_args(["serve", "--dtype", "float32"]).dtype == "float32"
    for dtype in ("float32", "bfloat16"):
        service = ReportService.from_directory(model_dir, dtype=dtype)
        assert next(service.model.decoder.parameters()).dtype == getattr(torch, dtype)
