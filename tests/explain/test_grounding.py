"""Pointing game, hallucination and laterality error rates on hand-built IU-Phantom-like studies."""

from __future__ import annotations

import pytest

from radgen.data.study import ImageRef, Study
from radgen.explain.grounding import in_box, stated_side, study_grounding, summarize


def _study() -> Study:
    marks_pa = [
        {"term": "Cardiomegaly/mild", "observation": "Cardiomegaly", "laterality": None, "box": [40, 60, 90, 100]},
        {"term": "Pleural Effusion/right/small", "observation": "Pleural Effusion", "laterality": "right", "box": [10, 80, 25, 95]},
    ]
    marks_lat = [{"term": "Pleural Effusion/right/small", "observation": "Pleural Effusion", "laterality": "right", "box": [70, 80, 90, 100]}]
    return Study(study_id="p1", images=[ImageRef("images/p1_PA.png", "PA"), ImageRef("images/p1_LATERAL.png", "LATERAL")],
                 labels={"chexpert": {"Cardiomegaly": 1, "Pleural Effusion": 1}},
                 meta={"phantom": {"images": {"images/p1_PA.png": marks_pa, "images/p1_LATERAL.png": marks_lat}}})


def test_in_box_and_side():
    assert in_box((10, 80), [10, 80, 25, 95]) and in_box((25, 95), [10, 80, 25, 95])
    assert not in_box((26, 95), [10, 80, 25, 95]) and in_box((26, 95), [10, 80, 25, 95], tolerance=1)
    assert stated_side("small right pleural effusion") == "right"
    assert stated_side("left lower lobe atelectasis") == "left"
    assert stated_side("bilateral effusions, left greater than right") is None
    assert stated_side("right and left effusions") is None and stated_side("cardiomegaly") is None


def test_study_grounding_hand_built():
    sentences = [
        {"text": "mild cardiomegaly .", "peak": [50, 70]},  # inside the heart box: hit
        {"text": "small left pleural effusion .", "peak": [100, 100]},  # outside the right effusion box: miss; wrong side
        {"text": "right upper lobe pneumothorax .", "peak": [20, 20]},  # not rendered: hallucination, no pointing trial
        {"text": "no focal consolidation .", "peak": [0, 0]},  # negative statement: nothing
    ]
    report = " ".join(s["text"] for s in sentences)
    result = study_grounding(_study(), report, sentences, "images/p1_PA.png")
    assert result["generated_positive"] == ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
    assert result["hallucinated"] == ["Pneumothorax"] and result["missed"] == []
    assert [(t["observation"], t["hit"]) for t in result["pointing"]] == [("Cardiomegaly", True), ("Pleural Effusion", False)]
    assert result["pointing"][1]["boxes"] == [[10, 80, 25, 95]]  # boxes of the explained (PA) image only
    assert [(t["observation"], t["stated"], t["rendered"], t["error"]) for t in result["laterality"]] == [
        ("Pleural Effusion", "left", ["right"], True)]

    second = study_grounding(_study(), "small right pleural effusion .", [{"text": "small right pleural effusion .", "peak": [12, 90]}],
                             "images/p1_PA.png")
    assert second["laterality"][0]["error"] is False and second["pointing"][0]["hit"] is True
    assert second["missed"] == ["Cardiomegaly"]

    summary = summarize([result, second])
    # pointing: hits 1 + 1 of 3 trials; hallucination 1 of 3 + 1 positives; laterality 1 error of 2 checks
    assert summary["pointing_game"] == {"trials": 3, "hits": 2, "accuracy": pytest.approx(2 / 3)}
    assert summary["hallucination"]["rate"] == pytest.approx(1 / 4) and summary["hallucination"]["reports_with_hallucination"] == 1
    assert summary["laterality"] == {"checked": 2, "errors": 1, "rate": 0.5}


def test_stitched_image_has_no_pointing_trials():
    result = study_grounding(_study(), "mild cardiomegaly .", [{"text": "mild cardiomegaly .", "peak": [50, 70]}], None)
    assert result["pointing"] == [] and summarize([result])["pointing_game"]["accuracy"] is None
