"""The classifier-template baseline: one sentence per predicted finding, read back exactly by the labeler."""

import torch

from radgen.generate.classifier_template import NORMAL, TEMPLATES, classifier_template_predictions, template_report
from radgen.labels.labeler import label_report
from radgen.metrics.findings import ABNORMAL
from tests.models.conftest import tiny
from tests.train.imaging import write_studies


def test_each_template_names_exactly_its_own_observation():
    assert set(TEMPLATES) == set(ABNORMAL)
    for name, sentence in TEMPLATES.items():
        present = {k for k, v in label_report(sentence).items() if v in (1, -1) and k != "No Finding"}
        assert present == {name}, (name, sentence, present)
    assert not {k for k, v in label_report(NORMAL).items() if v in (1, -1) and k != "No Finding"}
    assert template_report([]) == NORMAL
    assert template_report(["Cardiomegaly", "Edema"]) == "the heart is enlarged . there is pulmonary edema ."


def test_predictions_follow_the_heads_thresholds(tmp_path):
    from radgen.data.study import read_manifest

    manifest = write_studies(tmp_path, train=0, val=4)
    model = tiny("radgen-small").eval()
    model.findings.thresholds.fill_(1.01)  # nothing found
    rows = classifier_template_predictions(model, read_manifest(manifest), root=tmp_path)
    assert [r["findings"] for r in rows] == [NORMAL] * 4
    model.findings.thresholds.fill_(1.01)
    model.findings.thresholds[ABNORMAL.index("Cardiomegaly")] = 0.0  # cardiomegaly found everywhere
    rows = classifier_template_predictions(model, read_manifest(manifest), root=tmp_path)
    assert all(r["findings"] == "the heart is enlarged ." and r["findings_predicted"] == ["Cardiomegaly"] for r in rows)
    assert set(rows[0]["finding_probs"]) == set(ABNORMAL)
