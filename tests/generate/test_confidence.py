"""Confidence definitions, ECE against hand-computed values, temperature fit against its closed form."""

from __future__ import annotations

import json
import math

import pytest

from radgen.data.study import Study, write_manifest
from radgen.generate.confidence import (
    calibrate,
    expected_calibration_error,
    fit_confidence_temperature,
    geometric_mean_probability,
    load_temperature,
    reference_presence,
    reliability_bins,
    sentence_confidences,
    sentence_correct,
    sentence_spans,
)
from radgen.errors import ConfigError, DataError
from radgen.models.decoders import build_tiny_tokenizer


def test_geometric_mean_probability():
    # (0.5 * 0.125) ** (1/2) = 0.25
    assert geometric_mean_probability([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    # temperature 2 on mean log 0.25 → sqrt(0.25) = 0.5
    assert geometric_mean_probability([math.log(0.5), math.log(0.125)], temperature=2.0) == pytest.approx(0.5)
    assert geometric_mean_probability([]) is None


def test_ece_hand_computed():
    conf = [0.05, 0.15, 0.35, 0.95, 0.92, 0.65]
    correct = [False, False, True, True, False, True]
    # bins (10): .05→b0 |0-.05|; .15→b1 |0-.15|; .35→b3 |1-.35|; .65→b6 |1-.65|; (.95,.92)→b9 |.5-.935| x2
    expected = (0.05 + 0.15 + 0.65 + 0.35 + 2 * 0.435) / 6  # = 0.345
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.345)
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)
    # 2 bins: (0,.5]: conf .05,.15,.35 acc 1/3 → |1/3 - .55/3|; (.5,1]: .95,.92,.65 acc 2/3 → |2/3 - 2.52/3|
    two = 3 / 6 * abs(1 / 3 - 0.55 / 3) + 3 / 6 * abs(2 / 3 - 2.52 / 3)
    assert expected_calibration_error(conf, correct, n_bins=2) == pytest.approx(two)
    # perfectly calibrated: 4 sentences at 0.75 confidence, 3 correct
    assert expected_calibration_error([0.75] * 4, [True, True, True, False]) == pytest.approx(0.0)


def test_bin_edges_are_right_closed():
    bins = reliability_bins([0.0, 0.5, 0.5000001, 1.0], [True, False, True, True], n_bins=2)
    assert [b.count for b in bins] == [2, 2]  # 0.0 and 0.5 in (0, .5]; the rest in (.5, 1]
    assert bins[0].accuracy == 0.5 and bins[1].accuracy == 1.0


def test_temperature_fit_matches_closed_form():
    # every sentence has confidence 0.9 at T=1 but only 60% are correct: the NLL-optimal
    # confidence is 0.6, i.e. exp(log(.9)/T) = .6 → T = log(.9)/log(.6)
    means = [math.log(0.9)] * 10
    correct = [True] * 6 + [False] * 4
    assert fit_confidence_temperature(means, correct) == pytest.approx(math.log(0.9) / math.log(0.6), rel=1e-3)
    # under-confident the other way: confidence 0.5, 90% correct → T = log(.5)/log(.9) > 1? no: < 1 sharpens
    assert fit_confidence_temperature([math.log(0.5)] * 10, [True] * 9 + [False]) == pytest.approx(math.log(0.5) / math.log(0.9), rel=1e-3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_sentence_spans_cover_tokens(tokenizer):
    text = "the heart size is normal . the lungs are clear . no pleural effusion"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = sentence_spans(tokenizer, ids)
    assert [s.text for s in spans] == ["the heart size is normal .", "the lungs are clear .", "no pleural effusion"]
    assert spans[0].start == 0 and spans[-1].end == len(ids)
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    for span in spans:
        assert tokenizer.decode(ids[span.start: span.end]).strip() == span.text
    logprobs = [-0.1 * (i + 1) for i in range(len(ids))]
    rows = sentence_confidences(tokenizer, ids, logprobs)
    first = logprobs[spans[0].start: spans[0].end]
    assert rows[0]["confidence"] == pytest.approx(math.exp(sum(first) / len(first)))
    assert sentence_spans(tokenizer, []) == []


def test_decimal_point_does_not_split(tokenizer):
    ids = tokenizer("a 1.5 cm nodule . clear", add_special_tokens=False)["input_ids"]
    assert [s.text for s in sentence_spans(tokenizer, ids)] == ["a 1.5 cm nodule .", "clear"]


def test_sentence_correctness():
    reference = reference_presence({"chexpert": {"Cardiomegaly": 1}}, None)
    assert sentence_correct("mild cardiomegaly .", reference) is True
    assert sentence_correct("the heart size is normal .", reference) is False
    assert sentence_correct("no pleural effusion .", reference) is True
    assert sentence_correct("small left pleural effusion .", reference) is False
    assert sentence_correct("the osseous structures are intact .", reference) is None
    # no labels: the labeler on the reference text; uncertain reference → unknown
    from_text = reference_presence({}, "possible pneumonia . small right effusion .")
    assert from_text["Pleural Effusion"] is True and from_text["Pneumonia"] is None and from_text["Edema"] is False
    assert sentence_correct("there is pneumonia .", from_text) is None


def test_calibrate_writes_json_and_png(tmp_path):
    studies = [Study(study_id=f"s{i}", sections={"findings": "x"}, labels={"chexpert": {"Cardiomegaly": 1} if i % 2 else {"No Finding": 1}})
               for i in range(4)]
    preds = []
    for i in range(4):
        preds.append({"study_id": f"s{i}", "findings": "cardiomegaly . bones intact .", "sentences": [
            {"text": "cardiomegaly .", "confidence": 0.8, "mean_logprob": math.log(0.8)},
            {"text": "bones intact .", "confidence": 0.9, "mean_logprob": math.log(0.9)}]})
    preds.append({"study_id": "unknown", "sentences": []})
    result = calibrate(preds, studies, str(tmp_path / "calib.json"))
    saved = json.loads((tmp_path / "calib.json").read_text())
    assert saved["checkable"] == 4 and saved["sentences"] == 8 and saved["matched"] == 4
    # 4 sentences at .8, half correct: ECE = |.5 - .8| = .3; fitted T makes confidence .5
    assert saved["ece"] == pytest.approx(0.3)
    assert math.exp(math.log(0.8) / saved["temperature"]) == pytest.approx(0.5, abs=1e-3)
    assert saved["ece_scaled"] == pytest.approx(0.0, abs=1e-3)
    assert (tmp_path / "calib.png").stat().st_size > 1000 and (tmp_path / "calib_scaled.png").is_file()
    assert load_temperature(str(tmp_path / "calib.json")) == pytest.approx(result["temperature"])
    with pytest.raises(DataError):
        calibrate([{"study_id": "nope", "sentences": []}], studies, str(tmp_path / "c2.json"))


def test_load_temperature_errors(tmp_path):
    assert load_temperature(None) == 1.0 and load_temperature("1.5") == 1.5
    with pytest.raises(ConfigError, match="calib.json"):
        load_temperature(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="> 0"):
        load_temperature("0")


def test_calibrate_cli(tmp_path):
    from radgen.cli import main
    from radgen.io import write_jsonl

    write_manifest(tmp_path / "m.jsonl", [Study(study_id="a", sections={"findings": "small right pleural effusion."})])
    write_jsonl(tmp_path / "p.jsonl", [{"study_id": "a", "sentences": [
        {"text": "right pleural effusion .", "mean_logprob": math.log(0.7)},
        {"text": "no pleural effusion .", "mean_logprob": math.log(0.6)}]}])
    assert main(["calibrate", "--pred", str(tmp_path / "p.jsonl"), "--ref", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "c.json")]) == 0
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["checkable"] == 2 and saved["accuracy"] == 0.5
    assert saved["ece"] == pytest.approx((abs(1 - 0.7) + abs(0 - 0.6)) / 2)
    assert saved["mean_confidence_correct"] == pytest.approx(0.7) and saved["mean_confidence_incorrect"] == pytest.approx(0.6)
