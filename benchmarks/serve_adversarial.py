"""Adversarial load on `radgen serve`: decompression bombs of every format with heatmaps, then legal
uploads at the pixel budget, then normal load, all from 20 concurrent clients; peak server memory.

    PYTHONPATH=. python benchmarks/serve_adversarial.py [--model DIR] [--clients 20] [--rounds 3]
        [--load-seconds 20] [--max-seconds 170] [--with-lateral] [--json serve_adversarial.json]

Starts `python -m radgen serve` (the shipped default model unless --model) in a subprocess on a free
port of 127.0.0.1 (never another host) and runs three phases, each with --clients threads:

1. bombs: every client posts each bomb of tests/data/bombs.py (PNG 13000^2, JPEG SOF 13000^2,
   uncompressed DICOM 14000^2 header, JPEG-in-DICOM 13000^2, RLE DICOM 13000^2 (2.6 MB),
   deflated DICOM 14000^2 16-bit (~380 KB, 392 MB inflated)) with heatmap=true, --rounds times.
   Every answer must be 422.
2. load: every client posts a 1024x1024 PNG in a loop (one request in flight each) for
   --load-seconds.
3. at the budget: every client posts one 6000x6000 PNG (36 Mpx, under the 40 Mpx budget) with
   heatmap=true.
`--with-lateral`: every request carries two images. In phase 1 the frontal (`file`) is the 1024x1024
PNG and the bomb is the study's lateral view (the `lateral` field), so the lateral's own checks
answer; in phases 2 and 3 the upload is sent as both views (two 36 Mpx PNGs a request).
Phases 2 and 3 must get 200s, and otherwise only the overload answers 503/504 (queue full, past
--timeout): a slow or busy machine is not a failure, a crash or a 500 is.

The server's peak resident memory is its VmHWM from /proc (the kernel's high-water mark, so no
sampling gaps), read after loading and after each phase. "peak_rss_mb" of a phase is the peak since
the server started (it includes the phases before, and the model load); "phase_peak_rss_mb" is the
peak within that phase alone (VmHWM reset through /proc/PID/clear_refs before it; null where the
kernel refuses). RssAnon (process memory: what requests can make the server spend) and RssFile
(mapped files: libraries, shared with the page cache) are read at the end of each phase.
Exit 1 on any 5xx, any unexpected status, or a dead server.
Bounded: --clients <= 64, --rounds <= 10, --load-seconds <= 120, the whole run stops after
--max-seconds (<= 600) and the server is killed on exit.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.data import bombs  # noqa: E402  (the same bombs the tests use)

BOMBS = {
    "png 13000^2": bombs.png_bomb, "jpeg 13000^2": bombs.jpeg_bomb, "dicom 14000^2 header": bombs.dicom_header_bomb,
    "jpeg-dicom 13000^2": bombs.dicom_jpeg_bomb, "rle-dicom 13000^2": bombs.dicom_rle_bomb, "deflate-dicom 14000^2": bombs.dicom_deflate_bomb,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def memory_mb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of `pid`, in MB."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024) for key in wanted if key in fields}


def reset_peak(pid: int) -> bool:
    """Reset the kernel's VmHWM of `pid` to its current RSS (Linux >= 4.0); False where refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def cpu_description() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    vector = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile") if f in flags]
    return f"{fields.get('Model name', '?').strip()} ({', '.join(vector) or 'no AVX'})"


def png(width: int, height: int) -> bytes:
    from PIL import Image

    # A smooth radiograph-like gradient with mild texture: compresses to a few MB at 36 Mpx.
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    pixels = (60 + 120 * np.exp(-((x - 0.35) ** 2 + (y - 0.5) ** 2) * 8) + 20 * np.sin(y * 40)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def post(client: httpx.Client, url: str, data: bytes, heatmap: bool, lateral: bytes | None = None) -> int:
    files = {"file": ("upload", data, "application/octet-stream")}
    if lateral is not None:
        files["lateral"] = ("lateral", lateral, "application/octet-stream")
    try:
        return client.post(url + "/v1/reports", files=files, data={"heatmap": "true" if heatmap else "false"}, timeout=120).status_code
    except httpx.HTTPError as err:
        return -1 if not isinstance(err, httpx.TimeoutException) else -2


def burst(url: str, uploads: list[tuple[bytes, bytes | None]], clients: int, heatmap: bool, stop_at: float) -> Counter:
    """Each client posts every (upload, lateral or None) in `uploads` once; returns status counts."""
    def client(_index: int) -> Counter:
        counts: Counter = Counter()
        with httpx.Client() as http:
            for data, lateral in uploads:
                if time.monotonic() > stop_at:
                    counts["not sent (time limit)"] += 1
                    continue
                counts[post(http, url, data, heatmap, lateral)] += 1
        return counts

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients)), Counter())


def load(url: str, data: bytes, clients: int, seconds: float, stop_at: float, lateral: bytes | None = None) -> Counter:
    end = min(time.monotonic() + seconds, stop_at)
    counts: Counter = Counter()
    lock = threading.Lock()

    def client(_index: int) -> None:
        with httpx.Client() as http:
            while time.monotonic() < end:
                status = post(http, url, data, heatmap=False, lateral=lateral)
                with lock:
                    counts[status] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=170.0)
    parser.add_argument("--with-lateral", action="store_true", help="every request also sends its upload as the lateral view")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.rounds <= 10 and 0 < args.load_seconds <= 120 and 0 < args.max_seconds <= 600):
        parser.error("bounds: --clients 1..64, --rounds 1..10, --load-seconds (0, 120], --max-seconds (0, 600]")
    started = time.monotonic()
    stop_at = started + args.max_seconds
    bomb_bytes = {name: build() for name, build in BOMBS.items()}
    at_budget, normal = png(6000, 6000), png(1024, 1024)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "radgen", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if args.model:
        command += ["--model", args.model]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report: dict = {}
    ok = True
    try:
        while True:
            if server.poll() is not None or time.monotonic() > stop_at:
                print(f"server did not start (exit {server.poll()})", file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        report["rss_after_load_mb"] = round(current_rss_mb(server.pid))
        report["memory_after_load_mb"] = memory_mb(server.pid)
        overall_peak = peak_rss_mb(server.pid)  # VmHWM since start; the resets below start each phase's own
        resettable = reset_peak(server.pid)
        phases = {}

        def record(name: str) -> None:
            nonlocal overall_peak, resettable
            phase_peak = peak_rss_mb(server.pid)
            overall_peak = max(overall_peak, phase_peak)
            phases[name]["peak_rss_mb"] = round(overall_peak)
            phases[name]["phase_peak_rss_mb"] = round(phase_peak) if resettable else None
            phases[name]["memory_at_end_mb"] = memory_mb(server.pid)
            resettable = resettable and reset_peak(server.pid)
        t = time.monotonic()
        bombs_sent = [(normal, bomb) if args.with_lateral else (bomb, None) for bomb in bomb_bytes.values()]
        counts = burst(url, bombs_sent * args.rounds, args.clients, True, stop_at)
        phases["bombs"] = {"requests": sum(counts.values()), "status": dict(counts), "seconds": round(time.monotonic() - t, 1)}
        record("bombs")
        ok &= set(counts) == {422}
        t = time.monotonic()
        counts = load(url, normal, args.clients, args.load_seconds, stop_at, normal if args.with_lateral else None)
        phases["load 1024^2 PNG"] = {"requests": sum(counts.values()), "status": dict(counts),
                                     "seconds": round(time.monotonic() - t, 1)}
        record("load 1024^2 PNG")
        ok &= set(counts) <= {200, 503, 504} and counts[200] > 0
        t = time.monotonic()
        counts = burst(url, [(at_budget, at_budget if args.with_lateral else None)], args.clients, True, stop_at)
        phases["36 Mpx PNG with heatmap"] = {"requests": sum(counts.values()), "status": dict(counts),
                                             "seconds": round(time.monotonic() - t, 1)}
        record("36 Mpx PNG with heatmap")
        ok &= set(counts) <= {200, 503, 504} and counts[200] > 0
        alive = server.poll() is None and httpx.get(url + "/health", timeout=5).status_code == 200
        ok &= alive
        report.update({
            "phases": phases, "server_alive_after": alive, "peak_rss_mb": round(max(overall_peak, peak_rss_mb(server.pid))),
            "upload_sizes_bytes": {**{k: len(v) for k, v in bomb_bytes.items()}, "png 6000^2": len(at_budget), "png 1024^2": len(normal)},
            "clients": args.clients, "with_lateral": args.with_lateral, "model": args.model or "shipped default (radgen/assets/default_model)",
            "seconds": round(time.monotonic() - started, 1), "date": time.strftime("%Y-%m-%d"),
            "hardware": {"cpu": cpu_description(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "ok": bool(ok),
        })
    finally:
        server.kill()
        server.wait(timeout=30)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
