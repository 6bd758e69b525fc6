"""benchmarks/finding_members.py: each member, their mean and another head, tuned on val and scored on test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from radgen.data.study import read_manifest, write_manifest
from radgen.models import ReportGenerator
from tests.generate.fixtures import tiny_model
from tests.train.imaging import write_studies

ROOT = Path(__file__).resolve().parents[2]


def _studies(tmp_path, val: int) -> Path:
    """6 train studies and `val` more, whose second half becomes the test split."""
    manifest = write_studies(tmp_path / "studies", train=6, val=val)
    studies = read_manifest(manifest)
    for study in studies[6 + val // 2:]:
        study.split = "test"
    write_manifest(manifest, studies)
    return manifest


def _run(tmp_path, manifest: Path, model: str, compare: str) -> dict:
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finding_members.py"), "--model", str(tmp_path / model), "--data",
                    str(manifest), "--compare", str(tmp_path / compare), "--min-positives", "3", "--bootstrap", "50", "--cv-splits", "20", "--json", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NO_CPU_FAST_PATHS": "1"}, timeout=600)
    return json.loads(out.read_text())


def test_members_and_their_mean_are_scored_against_the_image_truth(tmp_path):
    manifest = _studies(tmp_path, 36)
    tiny_model("radgen-small", "model.findings.members=2").save_pretrained(str(tmp_path / "ens"))
    tiny_model("radgen-small").save_pretrained(str(tmp_path / "one"))
    result = _run(tmp_path, manifest, "ens", "one")
    assert (result["studies"], result["val_studies"], result["members"]) == (18, 18, 2)
    # the cases of tests/train/imaging.py: a third cardiomegaly, a third effusion
    assert result["observations"] == {"Cardiomegaly": 6, "Pleural Effusion": 6}
    systems = result["systems"]
    assert list(systems) == ["member 1", "member 2", "logit mean of members 1-2", "probability mean of members 1-2",
                             f"compare: {tmp_path / 'one'}", "logit mean of members 1-2 and compare",
                             "probability mean of members 1-2 and compare"]
    assert result["whole_head"] == "logit mean of members 1-2"  # the head's own rule (model.findings.member_mean)
    whole = systems["logit mean of members 1-2"]["findings_abnormal_micro_f1"]
    for name in ("member 1", "member 2"):
        assert abs(systems[name]["ensemble_minus_this"]["delta"] - (whole - systems[name]["findings_abnormal_micro_f1"])) < 2e-4
    # cross-validated on val: a score for every system, and the paired halvings each side won
    assert all(0.0 <= row["val_cv_micro_f1"] <= 1.0 for row in systems.values())
    for name in ("member 1", "member 2"):
        assert systems[name]["val_cv_halvings_whole_head_wins"] + systems[name]["val_cv_halvings_this_wins"] <= 20
    assert "val_cv_halvings_this_wins" not in systems["logit mean of members 1-2"]

    # F1 by hand: member 1's and the whole head's probabilities (the model's own forward) at the
    # thresholds the script chose, against the manifest's labels
    model = ReportGenerator.from_pretrained(str(tmp_path / "ens")).eval()
    model.recipe.data.manifest = str(manifest)
    from radgen.train.data import load_splits

    test_set = load_splits(model.recipe, model.image_transform, extra=["test"])[2]
    names = model.findings.observations
    for system, head in (("member 1", model.findings.members[0]), ("logit mean of members 1-2", model.findings)):
        thresholds = torch.tensor(result["thresholds"][system])
        tp = fp = fn = 0
        with torch.no_grad():
            for i in range(len(test_set)):
                item = test_set[i]
                front = model.head_input(item["pixel_values"][None])
                side = model.head_input(item["lateral_pixel_values"][None])
                probs = torch.sigmoid(head(front, side, torch.tensor([bool(item["has_lateral"])])))[0]
                truth = test_set.studies[i].labels["chexpert"]
                for name in ("Cardiomegaly", "Pleural Effusion"):
                    said, present = bool(probs[names.index(name)] >= thresholds[names.index(name)]), truth.get(name) in (1, -1)
                    tp, fp, fn = tp + (said and present), fp + (said and not present), fn + (present and not said)
        assert systems[system]["findings_abnormal_micro_f1"] == round(2 * tp / max(2 * tp + fp + fn, 1), 4), system


def test_a_single_head_at_its_own_size_against_another_model(tmp_path):
    manifest = _studies(tmp_path, 24)
    tiny_model("radgen-small", "model.findings.tune_encoder_blocks=2", "model.findings.image_size=96").save_pretrained(str(tmp_path / "big"))
    tiny_model("radgen-small").save_pretrained(str(tmp_path / "one"))
    result = _run(tmp_path, manifest, "big", "one")
    assert result["members"] == 1 and list(result["systems"]) == ["member 1", f"compare: {tmp_path / 'one'}",
                                                                  "logit mean of member 1 and compare",
                                                                  "probability mean of member 1 and compare"]
    systems = result["systems"]
    versus = systems[f"compare: {tmp_path / 'one'}"]["ensemble_minus_this"]["delta"]
    assert abs(versus - (systems["member 1"]["findings_abnormal_micro_f1"] - systems[f"compare: {tmp_path / 'one'}"]["findings_abnormal_micro_f1"])) < 2e-4
