"""benchmarks/thread_rebalance.py: a loop of products, with and without re-counting the free cores, as another job starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_script_reports_windows_for_both_settings(tmp_path):
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RADGEN_NUM_THREADS", "OMP_NUM_THREADS")}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "thread_rebalance.py"), "--seconds", "11", "--load-at", "1",
                    "--events", "start", "--size", "64", "--json", str(out)],
                   check=True, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, timeout=300)
    result = json.loads(out.read_text())
    assert [(r["event"], r["rebalance"]) for r in result["runs"]] == [("start", False), ("start", True)]
    for run in result["runs"]:
        assert run["threads_at_start"] >= 1 and len(run["windows"]) == 1
        window = run["windows"][0]
        assert window["until_s"] >= 10 and window["threads"] >= 1 and window["products_per_s"] > 0
