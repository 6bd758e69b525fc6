"""generate_reports / generate_to_file / `radgen generate` on a tiny radgen-small and IU-Phantom images."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from radgen.cli import main
from radgen.data.study import read_manifest
from radgen.errors import DataError, WeightsError
from radgen.generate.decode import GenerationSettings, generate_reports, generate_to_file, load_model, resolve_model_dir, select_studies

ROW_KEYS = {"study_id", "findings", "impression", "token_logprobs", "tokens", "sentences", "confidence"}


@pytest.fixture(scope="module")
def model(saved_small):
    return load_model(saved_small[0])


def test_settings_default_to_recipe(model):
    settings = GenerationSettings.from_recipe(model.recipe)
    # radgen-small's generate: section (radgen/configs/radgen-small.yaml): greedy, 60 tokens, no repeated 3-grams
    assert (settings.num_beams, settings.max_new_tokens, settings.no_repeat_ngram_size, settings.consistent_findings) == (1, 60, 3, True)
    assert GenerationSettings.from_recipe(model.recipe, num_beams=3, top_p=None).num_beams == 3


def test_rows_and_confidence(model, phantom):
    manifest, root = phantom
    studies = read_manifest(manifest)[:3]
    rows = generate_reports(model, studies, root=root, num_beams=1, max_new_tokens=8, batch_size=2, progress=False)
    assert [r["study_id"] for r in rows] == ["s1", "s2", "s3"]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["impression"] == ""
        assert len(row["token_logprobs"]) == len(row["tokens"]) > 0
        mean = sum(row["token_logprobs"]) / len(row["token_logprobs"])
        assert row["confidence"] == pytest.approx(math.exp(mean), rel=1e-4)
        spans = [s["token_span"] for s in row["sentences"]]
        assert spans[0][0] == 0 and spans[-1][1] == len(row["tokens"])
        assert all(0 < s["confidence"] <= 1 for s in row["sentences"])
    # greedy log-probs are the model's own: recompute them with one teacher-forced forward pass
    from radgen.data.images import load_image

    row = rows[1]
    ids = model.tokenizer.convert_tokens_to_ids(row["tokens"])
    pixels = model.image_transform(load_image(root / studies[1].images[0].path)).unsqueeze(0)
    prefix = model.prefix_ids()
    input_ids = torch.tensor([prefix + ids])
    with torch.no_grad():
        logits = model(input_ids, torch.ones_like(input_ids), pixel_values=pixels).logits[0].float().log_softmax(-1)
    start = model.num_prefix_tokens
    expected = [logits[start - 1 + i, t].item() for i, t in enumerate(ids)]
    assert row["token_logprobs"] == pytest.approx(expected, abs=1e-3)


def test_section_and_temperature_scale(model, phantom):
    manifest, root = phantom
    studies = read_manifest(manifest)[:1]
    plain = generate_reports(model, studies, root=root, num_beams=1, max_new_tokens=6, progress=False)[0]
    scaled = generate_reports(model, studies, root=root, num_beams=1, max_new_tokens=6, progress=False,
                              section="impression", confidence_temperature=2.0)[0]
    assert scaled["findings"] == "" and scaled["impression"] == plain["findings"]
    assert scaled["confidence"] == pytest.approx(math.sqrt(plain["confidence"]), rel=1e-4)


def test_sampling_is_seeded(model, phantom):
    manifest, root = phantom
    studies = read_manifest(manifest)[:2]
    kw = dict(root=root, do_sample=True, num_beams=1, temperature=1.5, top_p=0.9, max_new_tokens=6, progress=False)
    first = generate_reports(model, studies, seed=3, **kw)
    again = generate_reports(model, studies, seed=3, **kw)
    assert [r["tokens"] for r in first] == [r["tokens"] for r in again]


def test_resume_skips_done_and_drops_partial_line(model, phantom, tmp_path):
    manifest, root = phantom
    studies = read_manifest(manifest)
    out = tmp_path / "preds.jsonl"
    kw = dict(root=root, num_beams=1, max_new_tokens=4, batch_size=2, progress=False)
    assert generate_to_file(model, studies[:2], out, **kw) == {"generated": 2, "skipped": 0}
    first_two = out.read_text().splitlines()
    # a killed run: the finished rows plus one half-written row in OUT.partial
    partial = tmp_path / "preds.jsonl.partial"
    partial.write_text("\n".join(first_two) + "\n" + '{"study_id": "s3", "findi')
    counts = generate_to_file(model, studies, out, **kw)
    assert counts == {"generated": 3, "skipped": 2}
    lines = out.read_text().splitlines()
    assert lines[:2] == first_two  # earlier rows kept verbatim
    assert [json.loads(line)["study_id"] for line in lines] == ["s1", "s2", "s3", "s4", "s5"]
    assert not partial.exists()
    assert generate_to_file(model, studies, out, **kw) == {"generated": 0, "skipped": 5}
    assert generate_to_file(model, studies[:1], out, overwrite=True, **kw) == {"generated": 1, "skipped": 0}
    assert len(out.read_text().splitlines()) == 1


def test_model_dir_resolution(saved_small, tmp_path):
    folder, _ = saved_small
    assert resolve_model_dir(folder) == folder
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(folder, run / "best")
    assert resolve_model_dir(run) == run / "best"
    with pytest.raises(WeightsError, match="best"):
        resolve_model_dir(tmp_path)
    merged = load_model(run)
    assert merged.merged and not load_model(folder, merge_lora=False).merged


def test_split_selection(phantom):
    studies = read_manifest(phantom[0])
    assert [s.study_id for s in select_studies(studies, "test", limit=2)] == ["s3", "s4"]
    with pytest.raises(DataError, match="splits present"):
        select_studies(studies, "nosuch")


def test_cli(saved_small, phantom, tmp_path, capsys):
    folder, _ = saved_small
    manifest, _ = phantom
    out = tmp_path / "p.jsonl"
    argv = ["generate", "--model", str(folder), "--data", str(manifest), "--out", str(out), "--split", "test",
            "--num-beams", "2", "--max-new-tokens", "5", "--no-repeat-ngram", "2", "--repetition-penalty", "1.2", "--batch-size", "2"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["study_id"] for r in rows] == ["s3", "s4", "s5"] and all(len(r["tokens"]) <= 5 for r in rows)
    assert main(argv) == 0 and "3 already done" in capsys.readouterr().out
    # a finished file is recognised before the model loads: a model that cannot load is never touched
    assert main([*argv[:1], "--model", str(tmp_path / "no-model"), *argv[3:]]) == 0
    assert "0 generated, 3 already done" in capsys.readouterr().out
    assert main(["generate", "--model", str(tmp_path), "--data", str(manifest), "--out", str(out)]) == 2
    assert "radgen_config.yaml" in capsys.readouterr().err
