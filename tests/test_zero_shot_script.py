"""scripts/zero_shot_eval.sh: a recipe's zero-shot scores in one command (export --untrained, generate, evaluate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.train.imaging import write_studies

ROOT = Path(__file__).resolve().parents[1]


def test_zero_shot_eval_script_scores_an_untrained_tiny_recipe(tmp_path):
    manifest = write_studies(tmp_path / "studies", train=2, val=3)
    out = tmp_path / "zero"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "zero_shot_eval.sh"), "radgen-small", str(manifest), str(out),
                             "--split", "val", "--size", "tiny", "generate.max_new_tokens=4"],
                            env={"RADGEN": f"{sys.executable} -m radgen", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row["study_id"].startswith("s") for row in rows)
    scores = json.loads((out / "scores.json").read_text())
    assert "bleu4" in json.dumps(scores)
