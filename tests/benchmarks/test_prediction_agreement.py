"""benchmarks/prediction_agreement.py on hand-made rows (expected values worked out by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prediction_agreement.py"


def _module():
    spec = importlib.util.spec_from_file_location("prediction_agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agreement_counts_identical_reports_prefixes_and_positions():
    ref = [{"study_id": "a", "findings": "x y z", "tokens": ["x", "y", "z"]},
           {"study_id": "b", "findings": "x y z w", "tokens": ["x", "y", "z", "w"]},
           {"study_id": "only-here", "findings": "q", "tokens": ["q"]}]
    cand = [{"study_id": "b", "findings": "x y q w", "tokens": ["x", "y", "q", "w"]},
            {"study_id": "a", "findings": "x y z", "tokens": ["x", "y", "z"]}]
    got = _module().agreement(ref, cand)
    assert got["studies"] == 2 and got["identical_text"] == 1
    assert got["mean_share_before_first_divergence"] == (1.0 + 2 / 4) / 2
    assert got["positionwise_token_agreement"] == (3 + 3) / (3 + 4)
