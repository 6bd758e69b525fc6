"""End to end: `radgen.metrics.evaluate`, the CLI commands and the baselines on a generated manifest."""

import json

import pytest

from radgen.cli import main
from radgen.data.study import Study, write_manifest
from radgen.data.text import clean_report
from radgen.errors import DataError
from radgen.io import read_jsonl, write_jsonl
from radgen.metrics import evaluate
from radgen.metrics.text import text_metrics
from tests.metrics._reports import report_pairs

FAST = ["bleu", "rouge_l", "cider_d", "ce"]


@pytest.fixture()
def corpus(tmp_path):
    hyps, refs = report_pairs(30, seed=9)
    studies = [
        Study(study_id=f"s{i}", sections={"findings": r.capitalize(), "impression": "No acute disease.", "indication": ["chest pain", "cough fever", "trauma"][i % 3]}, split="test" if i < 20 else "train")
        for i, r in enumerate(refs)
    ]
    studies.append(Study(study_id="empty", sections={"findings": "", "impression": "Normal."}, split="test"))
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, studies)
    preds = [{"study_id": f"s{i}", "findings": h, "impression": "normal chest"} for i, h in enumerate(hyps)] + [{"study_id": "empty", "findings": "x", "impression": ""}]
    pred_path = tmp_path / "preds.jsonl"
    write_jsonl(pred_path, preds)
    return manifest, pred_path, hyps, refs


def test_evaluate_scores_equal_direct_metrics_and_report_protocol(corpus):
    from radgen.metrics.meteor import java_available

    manifest, pred_path, hyps, refs = corpus
    metrics = FAST + (["meteor"] if java_available() else [])
    result = evaluate(pred_path, manifest, split="test", metrics=metrics, bootstrap=200)
    if java_available():  # METEOR runs in a background JVM; its CI comes from the jar on summed statistics
        assert list(result["corpus"])[:5] == ["bleu1", "bleu2", "bleu3", "bleu4", "meteor"]
        assert 0 < result["corpus"]["meteor"] < 1 and result["protocol"]["meteor"].startswith("METEOR 1.5")
        lo, hi = result["ci95"]["meteor"]
        assert lo <= result["corpus"]["meteor"] <= hi
    assert result["n_studies"] == 20 and result["skipped"]["empty_reference"] == 1
    direct = text_metrics([clean_report(h, "r2gen-iu") for h in hyps[:20]], [clean_report(r.capitalize(), "r2gen-iu") for r in refs[:20]])
    for key in ("bleu4", "rouge_l", "cider_d"):
        assert result["corpus"][key] == pytest.approx(direct.corpus[key], abs=1e-12)
        lo, hi = result["ci95"][key]
        assert lo <= result["corpus"][key] <= hi
    assert "ce_r2gen_micro_f1_14" in result["corpus"] and "ce_chexbert_example_f1_14" in result["corpus"]
    assert result["protocol"]["cleaning"] == "r2gen-iu" and "labeler" in result["protocol"]["ce_labeler"]
    assert len(result["per_study"]) == 20 and set(result["per_study"][0]["labels_ref"]) >= {"No Finding", "Edema"}


def test_missing_predictions_one_line_error_and_allow_missing(corpus, tmp_path):
    manifest, pred_path, _, _ = corpus
    rows = read_jsonl(pred_path)
    partial = tmp_path / "partial.jsonl"
    write_jsonl(partial, rows[3:])
    with pytest.raises(DataError, match=r"3 of 31 reference studies have no prediction \(first: s0, s1, s2\)"):
        evaluate(partial, manifest, metrics=FAST, bootstrap=0)
    result = evaluate(partial, manifest, metrics=FAST, bootstrap=0, allow_missing=True)
    assert result["skipped"]["missing_prediction"] == 3 and result["n_studies"] == 27
    with pytest.raises(Exception, match="unknown metrics"):
        evaluate(pred_path, manifest, metrics=["bleu", "spice"])


def test_cli_evaluate_writes_json_markdown_and_plot(corpus, tmp_path, capsys):
    manifest, pred_path, _, _ = corpus
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(pred_path), "--ref", str(manifest), "--split", "test", "--metrics", ",".join(FAST), "--bootstrap", "100", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert {"corpus", "ci95", "per_study", "protocol", "table_markdown"} <= set(payload)
    assert out.with_suffix(".md").read_text().startswith("### Scores")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", "--pred", str(tmp_path / "nope.jsonl"), "--ref", str(manifest), "--out", str(out)]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_cli_compare_and_label(corpus, tmp_path, capsys):
    manifest, pred_path, _, _ = corpus
    copy = tmp_path / "copy.jsonl"
    write_jsonl(copy, [{**row, "findings": row["findings"] + " no pneumothorax ."} for row in read_jsonl(pred_path)])
    out = tmp_path / "cmp.json"
    args = ["compare", str(pred_path), str(copy), "--ref", str(manifest), "--split", "test", "--metrics", "bleu,rouge_l", "--bootstrap", "100", "--out", str(out)]
    assert main(args) == 0
    comparison = json.loads(out.read_text())["comparison"]
    assert set(comparison) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"}
    assert 0 < comparison["rouge_l"]["p_value"] <= 1

    reports = tmp_path / "reports.jsonl"
    write_jsonl(reports, [{"id": "a", "text": "Small left pleural effusion. No pneumothorax."}, {"id": "b", "text": "Possible pneumonia."}])
    labels = tmp_path / "labels.jsonl"
    assert main(["label", "--in", str(reports), "--out", str(labels)]) == 0
    rows = read_jsonl(labels)
    assert rows[0]["id"] == "a" and rows[0]["Pleural Effusion"] == 1 and rows[0]["Pneumothorax"] == 0 and rows[0]["Edema"] is None
    assert rows[1]["Pneumonia"] == -1 and len(rows[1]) == 15
    write_jsonl(reports, [{"text": "no id"}])
    assert main(["label", "--in", str(reports), "--out", str(labels)]) == 2


def test_baselines(corpus, tmp_path):
    manifest, _, _, refs = corpus
    for kind in ("most-frequent", "random-train", "nearest-train"):
        out = tmp_path / f"{kind}.jsonl"
        assert main(["baseline", "--kind", kind, "--ref", str(manifest), "--out", str(out)]) == 0
        rows = read_jsonl(out)
        assert [r["study_id"] for r in rows] == [f"s{i}" for i in range(20)] + ["empty"]
        train_findings = {r.capitalize() for r in refs[20:]}
        assert all(r["findings"] in train_findings for r in rows)
    nearest = read_jsonl(tmp_path / "nearest-train.jsonl")
    # same indication text ("chest pain" for i % 3 == 0) -> a training study with that indication
    assert int(nearest[0]["source_study_id"][1:]) % 3 == 0


def test_the_consensus_baseline_copies_what_most_of_the_nearest_reports_say(tmp_path):
    from radgen.data.study import Study, write_manifest

    train = [Study(study_id=f"t{i}", split="train", sections={"indication": "chest pain", "findings": text})
             for i, text in enumerate(["Large left effusion and a pacemaker.", "The lungs are clear.",
                                       "The lungs are clear. No effusion.", "The lungs are clear."])]
    test = [Study(study_id="q", split="test", sections={"indication": "chest pain", "findings": "The lungs are clear."})]
    write_manifest(tmp_path / "m.jsonl", train + test)
    assert main(["baseline", "--kind", "nearest-train", "--ref", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "n.jsonl")]) == 0
    assert read_jsonl(tmp_path / "n.jsonl")[0]["source_study_id"] == "t0"  # ties: the first stored
    assert main(["baseline", "--kind", "consensus-train", "--pool", "4", "--ref", str(tmp_path / "m.jsonl"),
                 "--out", str(tmp_path / "c.jsonl")]) == 0
    row = read_jsonl(tmp_path / "c.jsonl")[0]
    assert row["source_study_id"] == "t1" and row["findings"] == "The lungs are clear."
