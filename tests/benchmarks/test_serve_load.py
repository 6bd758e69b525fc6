"""benchmarks/serve_load.py keeps running against a real `radgen serve` subprocess (a tiny random model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_load_reports_latency_batches_and_the_workers_time(tmp_path):
    out = tmp_path / "load.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--tiny", "--clients", "3", "--duration", "3",
                    "--json", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NUM_THREADS": "1"},
                   capture_output=True, timeout=300)
    info = json.loads(out.read_text())
    assert info["errors"] == 0 and info["requests_ok"] >= 3
    batches, reports = info["server_batches"], info["requests_ok"]
    assert 1 <= batches <= reports and 1 <= info["mean_batch_size"] <= 3 and info["largest_batch"] <= 3
    # the worker's time per batch is real (above zero) and, with at most 3 callers, each of which
    # waited for its batch, no longer than the slowest request's whole latency
    assert 0 < info["mean_batch_s"] <= info["latency_s"]["max"]
    if sys.platform.startswith("linux"):  # a server that decoded images touched some pages
        assert info["server_faults_per_report"] > 0


def test_minor_faults_reads_this_process_and_is_none_without_proc(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import resource

    from serve_load import minor_faults

    if sys.platform.startswith("linux"):
        own = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        assert abs(minor_faults(os.getpid()) - own) <= own // 10 + 1000
    assert minor_faults(-1) is None
