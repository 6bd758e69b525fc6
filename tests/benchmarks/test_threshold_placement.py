"""benchmarks/threshold_placement.py: the edge and the middle of the best-F1 gap, cross-validated on val and scored on test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.benchmarks.test_finding_members import _studies
from tests.generate.fixtures import tiny_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from finding_members import _pooled_micro_f1  # noqa: E402
from threshold_placement import cross_validated  # noqa: E402


def test_pooled_micro_f1_sums_the_counts_of_both_halves():
    # half 1: tp 1 (0.9), fp 1 (0.8), 1 true; half 2: tp 0, fp 0, 1 true missed (0.2 < 0.5)
    one = (torch.tensor([[0.9], [0.8]]), torch.tensor([[True], [False]]), torch.tensor([0.5]))
    two = (torch.tensor([[0.2]]), torch.tensor([[True]]), torch.tensor([0.5]))
    assert _pooled_micro_f1([one, two]) == 2 * 1 / (2 + 2)


def test_the_middle_wins_when_positives_spread_above_a_clear_gap():
    # negatives all at 0.1, positives spread over [0.6, 0.99]: a half's edge is its lowest positive, so
    # the other half's lower positives are missed; the middle (between 0.1 and that) misses none and,
    # with every negative at 0.1, never adds a false positive: it cannot lose a halving
    positives = torch.linspace(0.6, 0.99, 20)
    probs = torch.cat([torch.full((20,), 0.1), positives]).unsqueeze(1)
    targets = torch.cat([torch.zeros(20), torch.ones(20)]).unsqueeze(1)
    result = cross_validated(probs, targets, [0], splits=30)
    assert result["edge_wins"] == 0 and result["middle_wins"] > 0
    assert result["mean_micro_f1"]["middle"] == 1.0 > result["mean_micro_f1"]["edge"]


def test_script_scores_both_placements_on_the_image_truth(tmp_path):
    manifest = _studies(tmp_path, 36)
    tiny_model("radgen-small").save_pretrained(str(tmp_path / "m"))
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "threshold_placement.py"), "--model", str(tmp_path / "m"),
                    "--data", str(manifest), "--min-positives", "3", "--splits", "5", "--bootstrap", "50", "--json", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NO_CPU_FAST_PATHS": "1"}, timeout=600)
    result = json.loads(out.read_text())
    assert (result["studies"], result["val_studies"]) == (18, 18)
    # the cases of tests/train/imaging.py: a third cardiomegaly, a third effusion
    assert result["val_observations"] == ["Cardiomegaly", "Pleural Effusion"]
    assert result["test_observations"] == {"Cardiomegaly": 6, "Pleural Effusion": 6}
    cv = result["val_cross_validated"]
    assert cv["splits"] == 5 and cv["edge_wins"] + cv["middle_wins"] <= 5
    edge, middle = result["test"]["edge"]["findings_abnormal_micro_f1"], result["test"]["middle"]["findings_abnormal_micro_f1"]
    assert abs(result["test_middle_minus_edge"]["delta"] - (middle - edge)) < 2e-4
    # where the two differ, the middle sits below the edge (halfway down to the next score)
    for name, threshold in result["thresholds"]["middle"].items():
        assert threshold <= result["thresholds"]["edge"][name]
