"""benchmarks/cpu_kernels.py runs, and each fast kernel it times computes what the kernel it replaces computes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_kernels.py"
_spec = importlib.util.spec_from_file_location("cpu_kernels", SCRIPT)
cpu_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_kernels)


def test_every_timed_pair_agrees_and_every_row_is_timed():
    rows = (cpu_kernels.attention_rows(1) + cpu_kernels.convolution_rows(1) + cpu_kernels.logprob_rows(1)
            + cpu_kernels.head_rows(1) + cpu_kernels.padding_rows(1, layers=1))
    assert {r["kernel"] for r in rows} == {"attention", "same-padding conv (batch 32)", "token log-probs", "LM head, bf16",
                                           "decoder body (1 layers), bf16"}
    for r in rows:
        assert r["after_ms"] > 0
        if r["max_abs_diff"] is not None:
            assert r["before_ms"] > 0
            # bf16 attention: the same kernel on stacked heads (0 here, allow one bf16 rounding); a bf16
            # decoder body: real positions through the same Linear layers, whose kernels may round
            # differently for another row count (AMX did: one step, 1/64, at values of 2-4), so allow
            # bf16 roundings at the values' own size; fp32 otherwise
            bf16 = r["kernel"] == "attention" or r["kernel"].startswith("decoder body")
            assert r["max_abs_diff"] <= (1e-2 * max(1.0, r.get("max_abs_value", 1.0)) if bf16 else 1e-4), r


def test_int8_rows_time_both_linears_and_stay_near_fp32():
    from radgen.models.fast import int8_supported

    rows = cpu_kernels.int8_rows(1)
    if not int8_supported():
        assert rows == []
        return
    assert len(rows) == 12 and all(r["before_ms"] > 0 and r["after_ms"] > 0 for r in rows)
    # 8-bit weights and activations of unit-scale random inputs: off by a few hundredths, not more
    assert all(0 < r["max_abs_diff"] < 0.2 for r in rows), [r["max_abs_diff"] for r in rows]


def test_pack_hint_rows_time_both_layouts_which_compute_the_same_products():
    from radgen.models.fast import packing_supported

    rows = cpu_kernels.pack_hint_rows(1, stream_bytes=2**20, rows_counts=(1, 12), shapes=((48, 80), (80, 48)), also=(64,))
    if not packing_supported(torch.float32):
        assert rows == []
        return
    assert [r["shape"] for r in rows] == ["48x80, 1 rows", "48x80, 12 rows", "80x48, 1 rows", "80x48, 12 rows"]
    for r in rows:
        assert r["before_ms"] > 0 and r["after_ms"] > 0 and r["also"]["layout for 64 rows"] > 0
        assert r["max_abs_diff"] < 1e-4  # another layout, the same fp32 products (summation order aside)


def test_half_weight_rows_time_both_linears_which_multiply_the_fp16_rounded_weights():
    from radgen.models.fast import half_weights_supported, packing_supported

    rows = cpu_kernels.half_weight_rows(1, stream_bytes=2**20, rows_counts=(1, 12), shapes=((48, 80), (80, 48)))
    if not (packing_supported(torch.float32) and half_weights_supported()):
        assert rows == []
        return
    assert [r["shape"] for r in rows] == ["48x80, 1 rows", "48x80, 12 rows", "80x48, 1 rows", "80x48, 12 rows"]
    for r in rows:
        assert r["before_ms"] > 0 and r["after_ms"] > 0
        assert r["max_abs_diff"] < 1e-4  # fp32 products of the fp16-rounded weights, summation order aside
