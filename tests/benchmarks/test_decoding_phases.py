"""benchmarks/decoding_phases.py keeps running and its phase clock accounts for the whole wall time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.test_drafted_decoding import run_benchmark


@pytest.mark.parametrize("fast_paths", [False, True])
def test_decoding_phases_split_the_wall_time_and_bound_it_below(tmp_path, fast_paths):
    info = run_benchmark(tmp_path, "decoding_phases.py", "--batch-sizes", "1,2", "--plain", "--ops", fast_paths=fast_paths)
    assert info["product_rate_gflops"] > 0 and info["read_rate_gb_s"] > 0 and info["body_mflop_per_position"] > 0
    assert [row["batch_size"] for row in info["rows"]] == [1, 2]
    for row in info["rows"]:
        phases = row["phases"]
        assert set(phases) == {"image", "prefill", "passes", "pick scoring", "re-scoring", "other"}
        # exclusive accounting: the phases add up to the wall time, each one a real part of it
        assert sum(p["share"] for p in phases.values()) == pytest.approx(1.0, abs=0.02)
        assert all(p["s_per_report"] >= 0 for p in phases.values()) and phases["image"]["s_per_report"] > 0
        # one prefill per drafted call (a batch, plus any rows decoded again), and it feeds each prompt
        batches = -(-row["reports"] // row["batch_size"])
        prefills = round(phases["prefill"]["calls_per_report"] * row["reports"])
        assert batches <= prefills <= batches + row["redecoded_rows"]
        assert phases["prefill"]["positions_per_report"] > 0 and phases["image"]["positions_per_report"] == 0
        # every kept token but the last is fed back after the prefill (or was its first draft)
        fed = phases["prefill"]["positions_per_report"] + phases["passes"]["positions_per_report"]
        assert fed >= row["tokens_per_report"]
        # the whole head scores each pick once where the shortlist picked them, or never
        assert phases["pick scoring"]["head_positions_per_report"] in (0, pytest.approx(row["tokens_per_report"]))
        assert phases["re-scoring"]["head_positions_per_report"] == phases["re-scoring"]["positions_per_report"]
        assert 0 < row["floor_s_per_report"] < row["s_per_report"] and row["floor_with_image_s_per_report"] > row["floor_s_per_report"]
        # the floor is below the measured time, so the speed-up it allows exceeds the measured one
        assert row["plain_s_per_report"] > 0 and row["ceiling_vs_plain"] > row["speedup_vs_plain"] > 0
        # the profiled batch: its op kinds' times add up to its wall time, and the products did work at a finite rate
        ops = row["ops"]
        assert set(ops["kinds_s_per_report"]) == {"matrix products", "convolutions", "attention", "other ops", "outside ops"}
        assert ops["kinds_s_per_report"]["matrix products"] > 0 and ops["kinds_s_per_report"]["convolutions"] > 0
        assert sum(ops["kinds_s_per_report"].values()) >= ops["s_per_report"] * 0.99
        assert 0 < ops["product_gflops"] < 1e5


def test_op_kinds_sort_the_kernels_a_decoding_runs():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from decoding_phases import op_kind

    assert op_kind("quantized::linear_dynamic_fp16") == op_kind("mkldnn::_linear_pointwise") == op_kind("aten::addmm") == "matrix products"
    assert op_kind("aten::mkldnn_convolution") == "convolutions"
    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_kind("aten::silu") == op_kind("aten::index_select") == "other ops"


def test_the_instrumented_pick_scoring_forwards_every_argument(monkeypatch):
    """The phase clock wraps `score_picks`; the shipped model passes it the known-words check too
    (a wrapper that dropped it failed with a TypeError on the shipped model only: the tiny one has no shortlist)."""
    import sys

    from radgen.models import report_decoding, speculative
    from tests.generate.fixtures import tiny_model

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    monkeypatch.delitem(sys.modules, "decoding_phases", raising=False)
    import decoding_phases

    seen = []
    monkeypatch.setattr(speculative, "score_picks", lambda *args, **kwargs: seen.append((args, kwargs)) or ([[0.0]], [False]))
    for module, names in ((report_decoding, ("drafted_greedy", "score_tails", "score_continuations", "label_position_logprobs")),
                          (speculative, ("drafted_greedy", "_decode_again"))):
        for name in names:  # instrument() replaces these module globals: put them back after the test
            monkeypatch.setattr(module, name, getattr(module, name))
    clock = decoding_phases.PhaseClock()
    decoding_phases.instrument(tiny_model(), clock)
    allowed = object()
    assert speculative.score_picks("head", "short", [], [[1, 2]], [[1, 2]], allowed) == ([[0.0]], [False])
    assert speculative.score_picks("head", "short", [], [[3]], [[3]], allowed=allowed) == ([[0.0]], [False])
    assert [call[0][5] if len(call[0]) > 5 else call[1]["allowed"] for call in seen] == [allowed, allowed]
    assert clock.head_positions["pick scoring"] == 3 and clock.seconds["pick scoring"] > 0
