"""benchmarks/perf_compare.py keeps running: its tiny size (seed-000 recipe at test size) on CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "perf_compare.py"


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location("perf_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.NEW_TOKENS = 8  # the code path, not the 60-token timing: keeps this test fast
    return module


def test_tiny_training_steps_plain_and_radgen(perf):
    plain = perf.train_steps("plain", "tiny", batch=2, steps=1, options={})
    fast = perf.train_steps("radgen", "tiny", batch=2, steps=1, options={"loss_only": True})
    for row in (plain, fast):
        assert row["samples"] == 2 and row["wall_s"] > 0 and row["trainable"] > 0


def test_tiny_generation_runs_full_length_and_table_has_ratios(perf):
    plain = perf.generate_reports("plain", "tiny", batch=2, repeats=1, options={})
    fast = perf.generate_reports("radgen", "tiny", batch=2, repeats=1, options={"dtype": "bfloat16"})
    assert fast["dtype"] == "bfloat16" and plain["reports_per_s"] > 0
    for row in (plain, fast):
        row.update(maxrss_mib=1.0, loadavg_1min=[[0.0, 0.0]])
    lines = perf.table({"gen-b16/plain-peft-fp32": plain, "gen-b16/radgen-bf16": fast})
    assert lines[2].split("|")[6].strip() == "1.00x"
    assert lines[3].split("|")[6].strip() == f"{fast['reports_per_s'] / plain['reports_per_s']:.2f}x"


def test_tiny_quality_compares_bf16_and_int8_with_fp32(perf):
    rows = perf.quality("tiny", 2, None)
    for dtype in ("float32", "bfloat16", "int8"):
        assert 0.0 <= rows[dtype]["positionwise_token_agreement"] <= 1.0
        assert rows[dtype]["identical_text"].endswith("/2")
