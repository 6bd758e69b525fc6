"""A normal run of generate, evaluate, demo and serve prints no third-party warning or progress bar.

Run as subprocesses: pytest installs its own warning filters, so only a real process shows what a
user sees on stderr. radgen's own lines ("radgen: ...", its tqdm bars) and uvicorn's request log
are allowed; anything else fails the test with the offending lines.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.oneline_fixtures import image_folder, tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
# radgen's own progress bars (tqdm descriptions) and messages
ALLOWED = re.compile(r"^(radgen( serve)?: |generate:|INFO: +|\s*$)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "default"}  # default: show every warning once


def _radgen(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radgen", *args], capture_output=True, text=True, env=_env(),
                          timeout=timeout, cwd=REPO)


def _foreign_lines(stderr: str) -> list[str]:
    # tqdm redraws with \r; each redraw is its own line
    lines = [part for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if not ALLOWED.match(line)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def test_generate_and_evaluate_stderr_is_clean(model_dir, tmp_path):
    folder = image_folder(tmp_path / "scans")
    preds = tmp_path / "preds.jsonl"
    run = _radgen("generate", str(folder), "--model", str(model_dir), "--out", str(preds), "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert _foreign_lines(run.stderr) == [], run.stderr
    assert "generate:" in run.stderr  # radgen's own progress bar stays

    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"study_id": r["study_id"], "sections": {"findings": "The lungs are clear."}}) + "\n"
                           for r in rows))
    run = _radgen("evaluate", "--pred", str(preds), "--ref", str(ref), "--metrics", "bleu,rouge_l,cider_d,ce",
                  "--bootstrap", "10", "--out", str(tmp_path / "scores.json"))
    assert run.returncode == 0, run.stderr
    assert _foreign_lines(run.stderr) == [], run.stderr


def test_demo_stderr_is_clean(model_dir, tmp_path):
    run = _radgen("demo", "--model", str(model_dir), "--out", str(tmp_path / "demo"), "--studies", "1", "--size", "64",
                  "--metrics", "bleu,rouge_l")
    assert run.returncode == 0, run.stderr
    assert _foreign_lines(run.stderr) == [], run.stderr


def test_serve_stderr_is_clean(model_dir, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.err"
    with open(log, "w") as handle:
        server = subprocess.Popen([sys.executable, "-m", "radgen", "serve", "--model", str(model_dir), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=handle, env=_env(), cwd=REPO)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"radgen serve did not come up: {log.read_text()}")
                time.sleep(0.5)
        folder = image_folder(tmp_path / "scans")
        boundary = "radgenboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + (folder / "a.png").read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/reports", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and "findings" in json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert _foreign_lines(log.read_text()) == [], log.read_text()


def test_python_pipeline_stderr_is_clean(model_dir, tmp_path):
    folder = image_folder(tmp_path / "scans")
    code = ("import radgen\n"
            f"pipe = radgen.load({str(model_dir)!r}, device='cpu')\n"
            f"rows = pipe([{str(folder / 'a.png')!r}, {str(folder / 'sub' / 'IM0001')!r}])\n"
            "print(len(rows), rows[0]['sentences'][0]['confidence'])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=240, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("2 ") and run.stderr == ""
