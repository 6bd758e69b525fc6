"""Load test of `radgen serve`: N concurrent clients for D seconds against 127.0.0.1, latency percentiles.

    PYTHONPATH=. python benchmarks/serve_load.py --model DIR [--clients 20] [--duration 60]
        [--max-batch 20] [--gather-ms 300] [--dtype auto] [--image PNG | --manifest M [--split test]] [--json serve_load.json]
    PYTHONPATH=. python benchmarks/serve_load.py --tiny ...   # a tiny random radgen-small (no trained model needed)

Starts `python -m radgen serve` in a subprocess on a free port of 127.0.0.1 (never another host),
waits for /health, then runs --clients threads, each POSTing the same PNG to /v1/reports in a
loop (or, with --manifest, the frontal image and indication of the split's studies in turn, shared
round-robin by all clients: different studies give different reports, so drafted decoding cannot
replay one report) (one request in flight per client, so the queue never holds more than --clients jobs and the
server's default --max-queue 32 is not exceeded for 20 clients). Latency is measured per request
at the client, wall clock, from send to full response. Any non-200 answer counts as an error and
makes the script exit 1. The server's batch statistics come from /health.

Bounded: --clients at most 64, --duration at most 600 s, requests time out after 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from radgen.machine import cpu_summary

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_model(directory: Path) -> Path:
    import torch

    from radgen.config import load_recipe
    from radgen.models import build_model

    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny")).save_pretrained(str(directory))
    (directory / "model_card.json").write_text(json.dumps({"trained_on": "nothing: random weights (load test)"}))
    return directory


def default_image() -> bytes:
    import io

    from PIL import Image

    from radgen.data.phantom import render_terms

    buffer = io.BytesIO()
    Image.fromarray(render_terms(["Cardiomegaly/mild"], "load-test", size=512).images["PA"], mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def minor_faults(pid: int) -> int | None:
    """The process's minor page faults so far (/proc/PID/stat), None where there is no /proc. A
    server whose large blocks are reused from the heap takes few a batch; one that maps them fresh
    takes one per 4 KiB page touched (radgen.allocator)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[7])  # field 10 of proc(5), counted after the command name


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): the smallest value with >= q% of values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def manifest_requests(manifest: str, split: str, limit: int = 512) -> list[tuple[bytes, str]]:
    """(frontal image bytes, indication) of up to `limit` studies of `split`."""
    from radgen.data.study import read_manifest

    root = Path(manifest).resolve().parent
    requests = []
    for study in read_manifest(manifest):
        frontal = next((ref for ref in study.images if ref.is_frontal), None)
        if (study.split or "").lower() == split and frontal is not None:
            requests.append(((root / frontal.path).read_bytes(), study.sections.get("indication", "")[:500]))
        if len(requests) >= limit:
            break
    if not requests:
        raise SystemExit(f"{manifest}: no study with a frontal image in split '{split}'")
    return requests


def run_clients(url: str, requests: list[tuple[bytes, str]], clients: int, duration: float,
                timeline: list[tuple[float, float]] | None = None) -> tuple[list[float], list[str]]:
    """Latencies of the answered requests and the errors; `timeline` gets (seconds from the start at
    which a request was sent, its latency) for each answered one."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    began = time.perf_counter()
    stop_at = time.monotonic() + duration
    turn = iter(range(10**9))

    def client() -> None:
        with httpx.Client(timeout=120.0) as session:
            while time.monotonic() < stop_at:
                with lock:
                    image, indication = requests[next(turn) % len(requests)]
                start = time.perf_counter()
                try:
                    response = session.post(url + "/v1/reports", files={"file": ("chest.png", image, "image/png")},
                                            data={"indication": indication} if indication else None)
                    ok = response.status_code == 200
                    detail = f"{response.status_code}: {response.text[:120]}"
                except httpx.HTTPError as err:
                    ok, detail = False, f"{type(err).__name__}: {err}"
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(detail))
                    if ok and timeline is not None:
                        timeline.append((round(start - began, 3), round(elapsed, 3)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 180)
    return latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder to serve")
    parser.add_argument("--tiny", action="store_true", help="serve a tiny random radgen-small built in a temp folder")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-batch", type=int, default=20, help="the server's --max-batch (default: radgen serve's)")
    parser.add_argument("--gather-ms", type=float, default=300.0, help="the server's --gather-ms (default: radgen serve's)")
    parser.add_argument("--dtype", default="auto", help="the server's --dtype (default auto, as `radgen serve`)")
    parser.add_argument("--image", help="PNG/JPEG/DICOM to post (default: a 512² IU-Phantom PA view)")
    parser.add_argument("--manifest", help="post the frontal image + indication of this manifest's --split studies in turn")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64) or not (1 <= args.duration <= 600):
        parser.error("--clients must be 1..64 and --duration 1..600 s")
    if bool(args.model) == args.tiny:
        parser.error("pass exactly one of --model DIR / --tiny")
    workdir = Path(tempfile.mkdtemp(prefix="radgen-load-"))
    model_dir = Path(args.model) if args.model else tiny_model(workdir / "tiny_model")
    if args.manifest and args.image:
        parser.error("pass at most one of --image / --manifest")
    requests = manifest_requests(args.manifest, args.split) if args.manifest else \
        [(Path(args.image).read_bytes() if args.image else default_image(), "")]
    image = requests[0][0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_path = workdir / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "radgen", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
                                   "--port", str(port), "--max-batch", str(args.max_batch), "--max-queue", str(max(32, args.clients)),
                                   "--dtype", args.dtype, "--gather-ms", str(args.gather_ms)],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text()[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.3)
        # One warm-up request (first-call allocations) outside the timed window.
        httpx.post(url + "/v1/reports", files={"file": ("chest.png", image, "image/png")}, timeout=120).raise_for_status()
        before = httpx.get(url + "/health").json()["queue"]
        load_before = os.getloadavg()[0]
        faults_before = minor_faults(server.pid)
        started = time.perf_counter()
        timeline: list[tuple[float, float]] = []
        latencies, errors = run_clients(url, requests, args.clients, args.duration, timeline)
        wall = time.perf_counter() - started
        after = httpx.get(url + "/health").json()["queue"]
        load_after = os.getloadavg()[0]
        faults_after = minor_faults(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    import torch

    batches = after["batches_run"] - before["batches_run"]
    reports = after["reports_generated"] - before["reports_generated"]
    result = {
        "model": str(args.model) if args.model else "tiny random radgen-small (size=tiny)",
        "clients": args.clients, "duration_s": args.duration, "max_batch": args.max_batch, "gather_ms": args.gather_ms, "dtype": args.dtype,
        "requests_from": f"{args.manifest} ({args.split}, {len(requests)} studies)" if args.manifest else (args.image or "one phantom PNG"),
        "requests_ok": len(latencies), "errors": len(errors), "error_examples": errors[:5],
        "throughput_rps": len(latencies) / wall,
        "latency_s": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
                      "mean": statistics.fmean(latencies), "max": max(latencies)} if latencies else None,
        # where the slow requests fall: the first round (20 uploads at once) or later rounds
        "slowest_requests": [{"sent_at_s": sent, "latency_s": latency} for sent, latency in
                             sorted(timeline, key=lambda item: -item[1])[:max(1, len(timeline) // 20)]],
        "server_batches": batches, "mean_batch_size": reports / batches if batches else None, "largest_batch": after["largest_batch"],
        # the worker's generating time per batch: the rest of a request's latency is waiting, decoding and transport
        "mean_batch_s": (after["busy_s"] - before["busy_s"]) / batches if batches else None,
        # the server process's minor page faults in the timed window, per report generated
        "server_faults_per_report": (faults_after - faults_before) / reports
        if reports and faults_before is not None and faults_after is not None else None,
        "hardware": {"cpu": cpu_summary(), "cpus": os.cpu_count(), "torch": torch.__version__,
                     "python": platform.python_version(),
                     "load_average_1min": [round(load_before, 2), round(load_after, 2)]},
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "PYTHONPATH=. python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0 if latencies and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
