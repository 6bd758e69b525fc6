"""benchmarks/draft_table_memory.py fills a draft table to its key budget and stops there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_fills_to_its_budget_and_the_growth_is_reported(tmp_path):
    out = tmp_path / "memory.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "draft_table_memory.py"), "--order", "3", "--max-keys", "5000",
                    "--json", str(out)], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    result = json.loads(out.read_text())
    # learning stops at the first report that finds the budget reached: at most one report's keys past it
    assert 5000 <= result["keys"] <= 5000 + 3 * 60 and result["reports_added"] > 1
    assert result["rss_growth_mb"] >= 0 and result["order"] == 3
