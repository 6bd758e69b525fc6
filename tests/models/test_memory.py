"""A model's report memory: nearest-indication retrieval, its file, and `radgen model memory`."""

from __future__ import annotations

import json

import pytest

from radgen.cli import main
from radgen.data.retrieval import NgramIndex, TfidfIndex
from radgen.data.study import Study, write_manifest
from radgen.errors import DataError
from radgen.models import ReportGenerator, memory
from radgen.models.memory import ReportMemory, vouched_sentences
from tests.generate.fixtures import tiny_model


def test_the_index_returns_the_text_sharing_the_rarest_words():
    index = TfidfIndex(["chest pain", "chest pain and cough", "shortness of breath", "fever cough"])
    assert index.nearest("cough and fever") == 3
    assert index.nearest("XXXX-year-old with chest pain") == 0  # anonymisation dropped; the shorter exact match wins
    assert index.nearest("breath") == 2
    assert index.nearest("unrelated words") is None
    assert index.nearest("") is None
    assert TfidfIndex(["pain", "pain"]).nearest("pain") == 0  # ties: the first stored
    assert index.nearest_k("chest pain and cough", 3) == [1, 0, 3]  # best first: all three words, then "chest pain"
    assert index.nearest_k("cough", 10) == [3, 1]  # only the texts sharing a word
    assert index.nearest_k("unrelated", 5) == []


def test_the_consensus_is_the_report_most_like_the_others():
    reports = NgramIndex(["The heart is normal. The lungs are clear.",
                          "Left pleural effusion. Status post sternotomy.",
                          "the heart is normal . the lungs are clear .",  # the same words, differently written
                          "The heart is normal. No effusion."])
    # hand count: 2 and 0 share every n-gram (cosine 1), 3 shares "the heart is normal", 1 shares nothing
    assert reports.consensus([1, 2, 0, 3]) == 2  # 0 and 2 tie; the earlier candidate wins
    assert reports.consensus([3, 1, 0]) in (3, 0) and reports.consensus([3, 1, 0]) != 1
    assert reports.consensus([1, 3]) == 1  # two candidates have no consensus: the nearest stands
    assert reports.similarity(0, 2) == pytest.approx(1.0) and reports.similarity(0, 1) == 0.0


def test_the_memory_guides_by_indication_and_falls_back_to_the_commonest_report():
    mem = ReportMemory(["chest pain", "cough", "dyspnea", ""], ["normal .", "effusion .", "normal .", "edema ."])
    assert mem.guide("productive cough") == "effusion ."
    assert mem.guide("headache") == "normal ."  # no shared word: the most frequent report
    assert mem.guide(None) == "normal ."
    # a pool: the consensus of the nearest reports, not the nearest one when it stands alone
    pooled = ReportMemory(["cough", "cough fever", "cough fever chills", "cough at night", "pain"],
                          ["effusion on the left with a pacemaker .", "the lungs are clear .", "the lungs are clear .",
                           "the lungs are clear . no effusion .", "normal ."], ["a", "b", "c", "d", "e"])
    assert pooled.lookup("cough", pool=1) == ("a", "effusion on the left with a pacemaker .")
    assert pooled.lookup("cough", pool=4) == ("b", "the lungs are clear .")
    assert pooled.lookup("headache", pool=4) == ("b", "the lungs are clear .")  # no shared word: the most frequent report
    with pytest.raises(ValueError, match="2 indications for 1 reports"):
        ReportMemory(["a", "b"], ["x"])
    with pytest.raises(DataError, match="no reports"):
        ReportMemory([], [])
    with pytest.raises(DataError, match="cleaning"):
        ReportMemory(["a"], ["x"], cleaning="shouting")


def test_a_guide_lends_only_sentences_the_finding_head_can_vouch_for():
    assert vouched_sentences("the heart is normal . degenerative changes of the spine . no effusion .") == \
        "the heart is normal . no effusion ."
    assert vouched_sentences("The heart and lungs have XXXX XXXX in the interval. Both lungs are clear.") == "Both lungs are clear."
    assert vouched_sentences("Stable calcified granuloma.") == ""
    mem = ReportMemory(["cough", "pain"], ["there is a small effusion . surgical clips in the right upper quadrant .",
                                           "unchanged from the prior study ."])
    assert mem.guide("cough") == "there is a small effusion ."
    assert mem.guide("pain") == ""  # nothing left to lend: that study decodes unguided
    mem.vouched_only = False
    assert mem.guide("cough") == "there is a small effusion . surgical clips in the right upper quadrant ."
    # the consensus follows the switch: the same picks as a memory built with the other setting
    import random

    rng = random.Random(0)
    sentences = ["the lungs are clear .", "no effusion .", "the heart is normal .", "stable granuloma .",
                 "degenerative changes of the spine .", "small left effusion .", "surgical clips ."]
    words = ["pain", "cough", "fever", "dyspnea", "trauma"]
    indications = [" ".join(rng.sample(words, 2)) for _ in range(60)]
    reports = [" ".join(rng.sample(sentences, 3)) for _ in range(60)]
    switched = ReportMemory(indications, reports)
    picks = {w: switched.lookup(w, pool=12) for w in words}
    switched.vouched_only = False
    whole = ReportMemory(indications, reports, vouched_only=False)
    assert all(switched.lookup(w, pool=12) == whole.lookup(w, pool=12) for w in words)
    assert any(picks[w][0] != whole.lookup(w, pool=12)[0] for w in words)  # the setting changes some picks


def test_the_memory_travels_with_the_saved_model_and_bad_files_fail_clearly(tmp_path, monkeypatch):
    model = tiny_model("radgen-small")
    model.report_memory = ReportMemory(["cough"], ["there is a small left pleural effusion ."])
    model.save_pretrained(str(tmp_path / "m"))
    loaded = ReportGenerator.from_pretrained(str(tmp_path / "m"))
    assert loaded.report_memory.reports == ["there is a small left pleural effusion ."]
    assert loaded.report_memory.guide("cough") == "there is a small left pleural effusion ."
    assert ReportMemory.load(tmp_path) is None  # no file: no memory

    path = tmp_path / "m" / memory.FILENAME
    path.write_text("{not json")
    with pytest.raises(DataError, match=f"{path}: not a radgen report memory"):
        ReportMemory.load(tmp_path / "m")
    path.write_text(json.dumps({"reports": [{"indication": "x", "study_id": "s"}]}))
    with pytest.raises(DataError, match="not a radgen report memory"):
        ReportMemory.load(tmp_path / "m")
    path.write_text(json.dumps({"reports": [{"indication": "x", "report": "y .", "study_id": "s"}] * 3}))
    monkeypatch.setattr(memory, "MAX_REPORTS", 2)
    with pytest.raises(DataError, match="at most 2"):
        ReportMemory.load(tmp_path / "m")
    monkeypatch.setattr(memory, "MAX_BYTES", 10)
    with pytest.raises(DataError, match="more than a report memory may hold"):
        ReportMemory.load(tmp_path / "m")


def test_model_memory_stores_a_splits_cleaned_reports_keyed_by_indication(tmp_path, capsys):
    model = tiny_model("radgen-small")
    model.save_pretrained(str(tmp_path / "m"))
    studies = [Study(study_id="a", split="train", sections={"findings": "The heart is NORMAL.", "indication": "Chest pain"}),
               Study(study_id="b", split="train", sections={"findings": "", "indication": "cough"}),  # no report: skipped
               Study(study_id="c", split="test", sections={"findings": "Effusion.", "indication": "cough"})]
    write_manifest(tmp_path / "manifest.jsonl", studies)
    assert main(["model", "memory", str(tmp_path / "m"), "--data", str(tmp_path / "manifest.jsonl")]) == 0
    assert "stored 1 'train' reports" in capsys.readouterr().out
    stored = ReportMemory.load(tmp_path / "m")
    assert stored.indications == ["Chest pain"] and stored.study_ids == ["a"]
    assert stored.reports == ["The heart is NORMAL."]  # verbatim in the file
    assert stored.guide("pain") == "the heart is normal ."  # cleaned as the model trains (the recipe's r2gen-iu)
    assert stored.source("pain") == "a"
    assert main(["model", "memory", str(tmp_path / "m"), "--data", str(tmp_path / "manifest.jsonl"), "--split", "val"]) == 2
    assert "no study has split 'val'" in capsys.readouterr().err
