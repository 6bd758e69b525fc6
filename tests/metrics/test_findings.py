"""Findings vs image truth (radgen.metrics.findings), checked against scikit-learn on the same label matrices."""

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from radgen.data.study import Study
from radgen.metrics.evaluate import evaluate
from radgen.metrics.findings import ABNORMAL, finding_scores, finding_statistic
from radgen.metrics.stats import bootstrap


def _random_labels(rng, n, rates):
    rows = []
    for _ in range(n):
        row = {}
        for name, rate in zip(ABNORMAL, rates):
            value = rng.random()
            if value < rate:
                row[name] = 1 if value < rate * 0.8 else -1  # some uncertain: present
            elif value < rate + 0.1:
                row[name] = 0
        rows.append(row)
    return rows


def test_scores_equal_sklearn_over_observations_with_enough_positives():
    rng = np.random.default_rng(0)
    rates = [0.3, 0.2, 0.01, 0.25, 0.05, 0.15, 0.0, 0.3, 0.02, 0.2, 0.1, 0.05, 0.2]
    truth, pred = _random_labels(rng, 200, rates), _random_labels(rng, 200, rates)
    for i in range(0, 200, 3):  # correlate some predictions with the truth
        pred[i] = dict(truth[i])
    scores = finding_scores(pred, truth, min_positives=10)
    as_matrix = lambda rows: np.array([[1 if r.get(n) in (1, -1) else 0 for n in ABNORMAL] for r in rows])
    y_true, y_pred = as_matrix(truth), as_matrix(pred)
    counted = [k for k in range(len(ABNORMAL)) if y_true[:, k].sum() >= 10]
    assert 0 < len(counted) < len(ABNORMAL)  # the threshold leaves some observations out
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y_true[:, counted], y_pred[:, counted], average=average, zero_division=0)
        assert scores[f"findings_abnormal_{average}_p"] == pytest.approx(p)
        assert scores[f"findings_abnormal_{average}_r"] == pytest.approx(r)
        assert scores[f"findings_abnormal_{average}_f1"] == pytest.approx(f)
    p, r, f, _ = precision_recall_fscore_support(y_true[:, counted], y_pred[:, counted], average=None, zero_division=0)
    for j, k in enumerate(counted):
        key = ABNORMAL[k].lower().replace(" ", "_")
        assert scores[f"findings_{key}_f1"] == pytest.approx(f[j]) and scores[f"findings_{key}_p"] == pytest.approx(p[j])
    left_out = [ABNORMAL[k] for k in range(len(ABNORMAL)) if k not in counted]
    assert all(f"findings_{n.lower().replace(' ', '_')}_f1" not in scores for n in left_out)
    statistic, protocol = finding_statistic(pred, truth)
    assert set(protocol["findings_observations"]) == {ABNORMAL[k] for k in counted}
    low, high = bootstrap([statistic], 200)["findings_abnormal_micro_f1"]
    assert low < scores["findings_abnormal_micro_f1"] < high


def test_evaluate_scores_reports_against_manifest_truth_not_reference_text():
    # the reference TEXT says normal, the image truth says cardiomegaly: only the truth counts
    studies, preds = [], []
    for i in range(24):
        sick = i % 2 == 0
        studies.append(Study(study_id=f"s{i}", sections={"findings": "the heart is normal in size ."}, split="test",
                             labels={"chexpert": {"Cardiomegaly": 1} if sick else {}}))
        preds.append({"study_id": f"s{i}", "findings": "the heart is enlarged ." if sick or i % 4 == 1 else "the heart is normal ."})
    result = evaluate(preds, studies, metrics=["findings"], bootstrap=50)
    corpus = result["corpus"]
    # 12 true positives, 6 false positives (i % 4 == 1), no false negatives
    assert corpus["findings_cardiomegaly_p"] == pytest.approx(12 / 18)
    assert corpus["findings_cardiomegaly_r"] == 1.0
    assert corpus["findings_abnormal_micro_f1"] == pytest.approx(2 * 12 / (18 + 12))
    assert result["protocol"]["findings_observations"] == {"Cardiomegaly": 12}
    assert "findings_abnormal_micro_f1" in result["ci95"]


def test_evaluate_without_truth_labels_says_so_and_mixed_labels_are_an_error():
    studies = [Study(study_id=f"s{i}", sections={"findings": "clear ."}, split="test") for i in range(3)]
    preds = [{"study_id": f"s{i}", "findings": "clear ."} for i in range(3)]
    result = evaluate(preds, studies, metrics=["findings"], bootstrap=0)
    assert not any(k.startswith("findings_") for k in result["corpus"])
    assert any("labels.chexpert" in note for note in result["protocol"]["notes"])
    studies[0].labels["chexpert"] = {}
    from radgen.errors import DataError

    with pytest.raises(DataError, match="no labels.chexpert"):
        evaluate(preds, studies, metrics=["findings"], bootstrap=0)
