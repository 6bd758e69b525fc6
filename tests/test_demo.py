"""`radgen demo` end to end with a tiny saved model (no METEOR: Java start-up alone takes ~30 s)."""

from __future__ import annotations

import html
import json

import pytest

from radgen.cli import main
from radgen.demo import DEMO_STUDIES, demo_studies
from radgen.io import read_jsonl
from tests.serve.tiny_model import tiny_model_dir

FAST_METRICS = "bleu,rouge_l,cider_d,ce"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    model_dir = tiny_model_dir(tmp_path_factory)
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--model", str(model_dir), "--studies", "3", "--size", "128", "--metrics", FAST_METRICS]) == 0
    return out


def test_demo_writes_page_predictions_and_metrics(demo_out):
    page = (demo_out / "report.html").read_text()
    preds = read_jsonl(demo_out / "predictions.jsonl")
    manifest = read_jsonl(demo_out / "manifest.jsonl")
    assert [p["study_id"] for p in preds] == ["demo-01-normal", "demo-02-cardiomegaly", "demo-03-effusion"]
    references = {row["id"]: row for row in read_jsonl(DEMO_STUDIES)}
    for pred, study in zip(preds, manifest):
        assert (demo_out / study["images"][0]["path"]).is_file()  # rendered phantom PA view
        assert f'src="{study["images"][0]["path"]}"' in page
        assert (demo_out / f"images/{pred['study_id']}_PA_attention.png").is_file()
        # The page shows the embedded reference text and every generated sentence.
        assert references[pred["study_id"]]["findings"] in page
        for sentence in pred["sentences"]:
            assert html.escape(sentence["text"]) in page
    assert "not IU X-Ray reports" in page and "NOT for clinical use" in page
    assert "random weights built by the test suite" in page  # model card's trained_on
    assert "http://" not in page and "https://" not in page  # offline, self-contained


def test_demo_metrics_match_pycocoevalcap_on_the_same_pairs(demo_out):
    """BLEU-4 / ROUGE-L in metrics.json equal pycocoevalcap run here on predictions vs embedded references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    from radgen.data.text import clean_report

    metrics = json.loads((demo_out / "metrics.json").read_text())
    preds = {p["study_id"]: p for p in read_jsonl(demo_out / "predictions.jsonl")}
    refs = {s.study_id: [clean_report(s.report("findings"), "r2gen-iu")] for s in demo_studies(3)}
    hyps = {k: [clean_report(preds[k]["findings"], "r2gen-iu")] for k in refs}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    rouge, _ = Rouge().compute_score(refs, hyps)
    assert metrics["corpus"]["bleu4"] == pytest.approx(bleu[3], abs=1e-9)
    assert metrics["corpus"]["rouge_l"] == pytest.approx(rouge, abs=1e-9)
    assert metrics["n_studies"] == 3 and "ce_r2gen_micro_f1_14" in metrics["corpus"]
    assert f'{metrics["corpus"]["rouge_l"]:.4f}' in (demo_out / "report.html").read_text()


def test_demo_refuses_a_foreign_folder_and_missing_default_model(tmp_path, monkeypatch, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    assert main(["demo", "--out", str(foreign), "--model", str(tmp_path)]) == 2
    assert "is not an earlier `radgen demo` output" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "x"), "--metrics", "bleu,blue"]) == 2
    assert "--metrics: unknown blue" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "keep me"

    import radgen.pipeline as pipeline

    monkeypatch.setitem(pipeline.MODEL_NAMES, "radgen-small", tmp_path / "no_model_here")
    assert main(["demo", "--out", str(tmp_path / "fresh")]) == 2
    err = capsys.readouterr().err
    assert "the shipped model 'radgen-small' is missing from this installation" in err and "pass --model" in err
    assert main(["serve"]) == 2
    assert "the shipped model 'radgen-small' is missing" in capsys.readouterr().err
