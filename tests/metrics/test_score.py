"""radgen.metrics.score on plain strings equals `radgen evaluate`; the evaluate headline; run_info in scores.json."""

import json

import pytest

from radgen.cli import main
from radgen.data.study import Study, write_manifest
from radgen.errors import DataError
from radgen.io import write_jsonl
from radgen.metrics import score
from radgen.metrics.score import headline
from tests.metrics._reports import report_pairs

FAST = ["bleu", "rouge_l", "cider_d", "ce"]


def test_score_on_strings_equals_the_cli_on_the_same_pairs(tmp_path, capsys):
    hyps, refs = report_pairs(12, seed=3)
    refs = [r.capitalize() for r in refs]
    scores = score(hyps=hyps, refs=refs, metrics=FAST)
    write_manifest(tmp_path / "ref.jsonl", [Study(study_id=f"s{i}", sections={"findings": r}) for i, r in enumerate(refs)])
    write_jsonl(tmp_path / "pred.jsonl", [{"study_id": f"s{i}", "findings": h} for i, h in enumerate(hyps)])
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "ref.jsonl"),
                 "--metrics", ",".join(FAST), "--bootstrap", "20", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert scores == payload["corpus"]  # same keys, same order, same values
    assert 0 < scores["bleu4"] < 1 and "ce_r2gen_micro_f1_14" in scores

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == headline(payload)
    assert printed[0].startswith(f"BLEU-4 {scores['bleu4']:.4f} | ROUGE-L {scores['rouge_l']:.4f} | CIDEr-D")
    assert len(printed) <= 4 and not any("ce_chexbert" in line for line in printed)  # the 36 CE variants stay in the files
    assert "ce_chexbert_macro_f1_5" in out.with_suffix(".md").read_text()

    info = payload["run_info"]
    assert info["packages"]["torch"] and info["packages"]["transformers"] and info["packages"]["peft"]
    assert info["device"] and "radgen" in info and "git" in info
    if info["git"] is not None:
        assert len(info["git"]["commit"]) == 40


def test_score_full_result_and_one_line_errors():
    result = score(["no effusion ."], ["No pleural effusion."], metrics=["bleu", "rouge_l"], full=True)
    assert result["n_studies"] == 1 and result["per_study"][0]["study_id"] == "0"
    with pytest.raises(DataError, match="2 hyps but 1 refs"):
        score(["a", "b"], ["a"], metrics=["bleu"])
    with pytest.raises(DataError, match="hyps must be a list of strings"):
        score("a report", ["a"], metrics=["bleu"])


def test_headline_shows_the_abnormal_finding_f1_when_references_carry_truth_labels():
    base = {"n_studies": 3, "section": "findings", "corpus": {"bleu4": 0.1, "rouge_l": 0.2, "cider_d": 0.3, "meteor": 0.15}}
    assert headline(base) == "BLEU-4 0.1000 | METEOR 0.1500 | ROUGE-L 0.2000 | CIDEr-D 0.3000 (3 studies, findings)"
    flat = {**base, "corpus": {**base["corpus"], "findings_abnormal_micro_f1": 0.42}}
    assert headline(flat).endswith("CIDEr-D 0.3000 | abnormal-finding F1 0.4200 (3 studies, findings)")
    from radgen.data.study import Study
    from radgen.metrics.evaluate import evaluate

    studies = [Study(study_id=f"s{i}", sections={"findings": "clear ."}, split="test",
                     labels={"chexpert": {"Edema": 1} if i < 10 else {}}) for i in range(12)]
    preds = [{"study_id": f"s{i}", "findings": "mild pulmonary edema ." if i < 5 else "clear ."} for i in range(12)]
    result = evaluate(preds, studies, metrics=["bleu", "findings"], bootstrap=0)
    assert "abnormal-finding F1 0.6667" in headline(result)  # 5 of 10 edema named, no false positive
    assert headline({"corpus": {}}).startswith("no headline metric computed")
