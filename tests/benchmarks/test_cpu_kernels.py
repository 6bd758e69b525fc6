"""benchmarks/cpu_kernels.py runs, and each fast kernel it times computes what the kernel it replaces computes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_kernels.py"
_spec = importlib.util.spec_from_file_location("cpu_kernels", SCRIPT)
cpu_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_kernels)


def test_every_timed_pair_agrees_and_every_row_is_timed():
    rows = (cpu_kernels.attention_rows(1) + cpu_kernels.convolution_rows(1) + cpu_kernels.logprob_rows(1)
            + cpu_kernels.head_rows(1))
    assert {r["kernel"] for r in rows} == {"attention", "same-padding conv (batch 32)", "token log-probs", "LM head, bf16"}
    for r in rows:
        assert r["after_ms"] > 0
        if r["max_abs_diff"] is not None:
            assert r["before_ms"] > 0
            # bf16 attention: the same kernel on stacked heads (0 here, allow one bf16 rounding); fp32 otherwise
            assert r["max_abs_diff"] <= (1e-2 if r["kernel"] == "attention" else 1e-4), r
