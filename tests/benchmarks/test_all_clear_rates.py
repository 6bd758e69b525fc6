"""benchmarks/all_clear_rates.py: the share of reports clearing the study, per observation present."""

from __future__ import annotations

import sys
from pathlib import Path

from radgen.data.study import Study, write_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from all_clear_rates import main  # noqa: E402


def test_each_observation_counts_the_reports_that_clear_the_study(tmp_path):
    def study(index: int, findings: str, labels: dict, split: str = "train") -> Study:
        return Study(study_id=f"s{index}", sections={"findings": findings}, labels={"chexpert": labels}, split=split)

    write_manifest(tmp_path / "m.jsonl", [
        study(0, "The heart is normal. No acute disease.", {"No Finding": 1}),
        study(1, "The heart is normal. The lungs are clear.", {}),
        study(2, "Small left effusion. No evidence of active cardiopulmonary process.", {"Pleural Effusion": 1}),
        study(3, "Small left effusion. Heart is enlarged.", {"Pleural Effusion": 1, "Cardiomegaly": -1}),
        study(4, "Pacemaker in place. Normal chest.", {"Support Devices": 1}),
        study(5, "No acute disease.", {"Pleural Effusion": 1}, split="val"),  # another split: not counted
    ])
    out = main(["--data", str(tmp_path / "m.jsonl"), "--split", "train"])["observations"]
    shares = {name: (row["studies"], row["share_with_an_all_clear_sentence"]) for name, row in out.items()}
    assert shares == {"(none)": (2, 0.5), "Pleural Effusion": (2, 0.5), "Cardiomegaly": (1, 0.0), "Support Devices": (1, 1.0)}
    assert out["Pleural Effusion"]["contradicted"] and not out["Support Devices"]["contradicted"]
