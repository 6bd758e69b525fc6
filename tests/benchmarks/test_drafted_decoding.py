"""benchmarks/drafted_decoding.py keeps running: a tiny saved model on five rendered studies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.generate.fixtures import phantom_manifest, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path: Path, script: str, *options: str, fast_paths: bool = False) -> dict:
    """`script` over a tiny saved model (with a draft table) and five rendered studies; its --json output.
    fast_paths: leave the CPU fast paths (weight packing, bf16 where native) on."""
    model_dir = tmp_path / "model"
    tiny_model("radgen-small").save_pretrained(str(model_dir))
    (model_dir / "draft_reports.txt").write_text("The heart is normal.\nNo pleural effusion.\n", encoding="utf-8")
    manifest = phantom_manifest(tmp_path / "phantom")
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--manifest", str(manifest), "--model", str(model_dir),
                    "--limit", "3", "--threads", "1", "--json", str(out), *options],
                   # fp32 everywhere: on a CPU with native bf16 the radgen configs would otherwise decode in
                   # bf16 (dtype auto) against plain-peft's fp32, and the wording may differ
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NO_CPU_FAST_PATHS": "" if fast_paths else "1"},
                   timeout=600)
    return json.loads(out.read_text())


def test_drafted_decoding_benchmark_runs_and_every_config_writes_plain_greedy_text(tmp_path):
    info = run_benchmark(tmp_path, "drafted_decoding.py", "--batch-sizes", "1,2")
    assert info["seeded_draft_keys"] > 0 and info["studies"] == 3 and info["default_dtype"] == "float32"
    assert {(r["batch_size"], r["config"]) for r in info["rows"]} == {(b, c) for b in (1, 2) for c in
                                                                       ("plain-peft", "radgen-hf", "radgen-drafted", "radgen-drafted-cold",
                                                                                 "radgen-drafted-whole-head")}
    for row in info["rows"]:
        assert row["reports"] == 3 and row["identical_to_plain"] == 3 and row["s_per_report"] > 0
        # re-scoring on drafted decoding's caches is part of its positions; HF decoding has no such pass
        assert 0 <= row["rescored_positions"] <= row["decoder_positions"]
        assert row["rescored_positions"] == 0 or "drafted" in row["config"]
    one = {r["config"]: r for r in info["rows"] if r["batch_size"] == 1}
    # batch 1, HF greedy: the prompt once, then every generated token but the last (+ edited texts
    # scored again); the same texts, so the same positions for both HF configs
    assert one["plain-peft"]["decoder_positions"] == one["radgen-hf"]["decoder_positions"]
    assert one["plain-peft"]["decoder_positions"] > one["plain-peft"]["tokens"]
    # drafted: a prompt and every kept token fed at least once (the first as the prompt's prediction)
    assert one["radgen-drafted"]["decoder_positions"] >= one["radgen-drafted"]["tokens"]


def test_drafted_decoding_can_skip_configs_and_add_a_dtype(tmp_path):
    info = run_benchmark(tmp_path, "drafted_decoding.py", "--batch-sizes", "1", "--skip",
                         "radgen-hf,radgen-drafted-cold,radgen-drafted-whole-head", "--also-dtype", "int8")
    # with the CPU fast paths off, int8 falls back to fp32 (radgen.models.fast), so its text is plain greedy's too
    assert [r["config"] for r in info["rows"]] == ["plain-peft", "radgen-drafted", "radgen-drafted-int8"]
    assert all(r["identical_to_plain"] == 3 for r in info["rows"])
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "drafted_decoding.py"), "--manifest", "m", "--skip", "plain-peft"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--skip takes radgen-drafted-cold, radgen-drafted-whole-head, radgen-hf" in bad.stderr


def test_drafted_decoding_can_add_an_arm_with_another_packed_layout(tmp_path, monkeypatch):
    from radgen.models.fast import PACK_ENV, packing_supported
    from radgen.models.packed_linear import PACK_ROWS_HINT

    monkeypatch.setenv(PACK_ENV, "1")  # packed whatever the load-time timing would say
    info = run_benchmark(tmp_path, "drafted_decoding.py", "--batch-sizes", "1", "--skip", "radgen-hf,radgen-drafted-cold,radgen-drafted-whole-head",
                         "--also-pack-hint", "1", "--rounds", "1", fast_paths=True)
    assert [r["config"] for r in info["rows"]] == ["plain-peft", "radgen-drafted", "radgen-drafted-hint1"]
    assert all(r["reports"] == 3 for r in info["rows"]) and info["packed_layouts"]["plain-peft"] == []
    packed = packing_supported(torch.float32)
    assert info["packed_layouts"]["radgen-drafted"] == ([PACK_ROWS_HINT] if packed else [])
    assert info["packed_layouts"]["radgen-drafted-hint1"] == ([1] if packed else [])


def test_drafted_decoding_can_add_an_arm_on_the_concatenating_cache(tmp_path):
    info = run_benchmark(tmp_path, "drafted_decoding.py", "--batch-sizes", "2", "--skip", "radgen-hf,radgen-drafted-cold,radgen-drafted-whole-head",
                         "--also-concat-cache", "--rounds", "1")
    rows = {r["config"]: r for r in info["rows"]}
    assert list(rows) == ["plain-peft", "radgen-drafted", "radgen-drafted-concat-cache"]
    # the same drafting on either cache: the same text, calls and positions
    assert all(r["reports"] == 3 and r["identical_to_plain"] == 3 for r in rows.values())
    for key in ("decoder_calls", "decoder_positions", "tokens"):
        assert rows["radgen-drafted-concat-cache"][key] == rows["radgen-drafted"][key]


def test_drafted_decoding_times_lanes_beside_one_lane_with_the_same_text(tmp_path):
    """Two threads, --lanes 2: the laned arms decode two of the three batch-1 studies side by side (the
    third alone), the one-lane arms and plain-peft one at a time; fp32 (fast paths off), so all write
    plain greedy's text."""
    from radgen.generate.lanes import per_thread_counts

    info = run_benchmark(tmp_path, "drafted_decoding.py", "--batch-sizes", "1", "--skip", "radgen-hf,radgen-drafted-cold,radgen-drafted-whole-head",
                         "--also-dtype", "float32", "--also-one-lane", "--lanes", "2", "--rounds", "1", "--threads", "2")
    rows = {r["config"]: r for r in info["rows"]}
    assert list(rows) == ["plain-peft", "radgen-drafted", "radgen-drafted-float32", "radgen-drafted-one-lane",
                          "radgen-drafted-float32-one-lane"]
    assert all(r["reports"] == 3 and r["identical_to_plain"] == 3 for r in rows.values())
    laned = 2 if per_thread_counts() else 1
    assert [r["lanes"] for r in rows.values()] == [1, laned, laned, 1, 1]


def test_draft_settings_sweep_runs_every_combination_and_the_settings_change_no_text(tmp_path):
    info = run_benchmark(tmp_path, "draft_settings.py", "--split", "test", "--batch-sizes", "2", "--orders", "1,4",
                         "--budgets", "2,160", "--draft-tokens", "1,16", "--repeats", "1")
    assert {(r["budget"], r["order"], r["draft_tokens"]) for r in info["rows"]} == {(b, o, k) for b in (2, 160) for o in (1, 4) for k in (1, 16)}
    for row in info["rows"]:  # fp32 (no fast paths): every setting decodes the same greedy text
        assert row["reports"] == 3 and row["identical_to_first"] == 3 and row["decoder_calls"] > 0


def test_packing_choice_times_every_packing_of_the_decoder_side_by_side(tmp_path):
    from radgen.models.fast import packing_supported

    info = run_benchmark(tmp_path, "packing_choice.py", "--split", "test", "--batch-sizes", "1,2", "--rounds", "2", fast_paths=True)
    arms = ("none", "head", "blocks", "all", "probe")
    assert [(r["batch_size"], r["arm"]) for r in info["rows"]] == [(b, a) for b in (1, 2) for a in arms]
    assert info["probe_choice"] in ("none", "head", "blocks", "all")
    assert len(info["probe_timings"]) == 4 and all(t["blocks_packed_over_plain"] > 0 and t["head_packed_over_plain"] > 0
                                                   for t in info["probe_timings"])
    for row in info["rows"]:
        assert row["reports"] == 3 and row["s_per_report"] > 0 and row["decoder_calls"] > 0
        # each fixed arm packs what it names (nothing where this CPU cannot pack the decoder's dtype)
        if row["arm"] != "probe" and packing_supported(getattr(torch, info["decoder_dtype"])):
            assert row["packed"] == row["arm"]
        if row["arm"] == "probe":
            assert row["packed"] == info["probe_choice"]
        if row["arm"] == "none":
            assert row["packed"] == "none" and row["identical_to_none"] == 3


def test_text_stability_counts_same_texts_and_findings_across_runs_and_batch_sizes(tmp_path):
    info = run_benchmark(tmp_path, "text_stability.py", "--batch-sizes", "2,1", "--dtypes", "float32")
    assert [(r["run"], r["against"]) for r in info["rows"]] == [("batch 2 again", "batch 2"), ("batch 1", "batch 2")]
    for row in info["rows"]:  # fp32: the same words whatever the batching (docs/serve.md says so)
        assert row["decoder_dtype"] == "float32" and row["studies"] == 3
        assert row["same_text"] == 3 and row["same_findings"] == 3


def test_allocator_heap_benchmark_runs_both_arms_alternately_and_they_write_the_same_reports(tmp_path):
    info = run_benchmark(tmp_path, "allocator_heap.py", "--batch-size", "2", "--pairs", "2", "--with-plain")
    arms = ["radgen/glibc-default", "radgen/heap", "plain/glibc-default", "plain/heap"]
    assert [r["arm"] for r in info["runs"]] == arms + arms[::-1]
    assert info["same_text"] and all(r["reports"] == 3 and r["s_per_report"] > 0 and r["peak_rss_mib"] > 0 for r in info["runs"])
    # RADGEN_NO_CPU_FAST_PATHS=1 here (run_benchmark): radgen leaves glibc alone in both arms
    assert not any(r["heap_thresholds_set"] for r in info["runs"])
