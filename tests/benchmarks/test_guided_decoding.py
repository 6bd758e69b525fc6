"""benchmarks/guided_decoding.py: the guide pool × margin × floor sweep runs end to end and picks by its stated rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.generate.fixtures import phantom_manifest, tiny_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from guided_decoding import pick, smallest_gain  # noqa: E402


def test_the_pick_is_the_setting_whose_weakest_relative_gain_is_largest():
    baseline = {"bleu4": 0.10, "meteor": 0.20, "cider_d": 0.20}
    big_bleu = {"bleu4": 0.15, "meteor": 0.21, "cider_d": 0.21}  # +50%, +5%, +5%
    even = {"bleu4": 0.11, "meteor": 0.22, "cider_d": 0.22}  # +10% on each
    assert smallest_gain(big_bleu, baseline) == pytest.approx(0.05)
    assert pick([big_bleu, even], baseline) is even
    assert smallest_gain({"bleu4": 0.12, "cider_d": 0.3}, baseline) == pytest.approx(0.2)  # METEOR absent: not counted


def test_the_sweep_scores_each_setting_next_to_nearest_train(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("radgen-small").save_pretrained(str(model_dir))  # no memory stored: built from the train split
    manifest = phantom_manifest(tmp_path / "phantom")
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "guided_decoding.py"), "--model", str(model_dir), "--data", str(manifest),
                    "--split", "test", "--pools", "1,2", "--margins", "0,100", "--floors", "0,4", "--json", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NO_CPU_FAST_PATHS": "1"}, timeout=600)
    result = json.loads(out.read_text())
    assert result["memory"].startswith("1 'train' reports")
    # the unguided text is decoded once per floor, whatever the pool
    assert [(r["guide_pool"], r["guide_margin"], r["min_new_tokens"]) for r in result["results"]] == [
        (1, 0, 0), (1, 0, 4), (1, 100, 0), (1, 100, 4), (2, 100, 0), (2, 100, 4)]
    assert result["studies"] == 3 and "bleu4" in result["nearest_train"] and "bleu4" in result["consensus_train"]["2"]
    assert result["pick"] in result["results"]
