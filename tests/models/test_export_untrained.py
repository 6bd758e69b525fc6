"""`radgen model export RECIPE --untrained`: the zero-shot model of a recipe (seed 000 reports
BLIP-2's zero-shot scores) as a saved folder that `radgen generate` and `radgen evaluate` take."""

from __future__ import annotations

import json

import torch

from radgen.cli import main
from radgen.config import load_recipe
from radgen.models import ReportGenerator, build_model
from tests.generate.fixtures import phantom_manifest


def test_untrained_export_is_the_recipe_as_built_and_generates(tmp_path, capsys):
    out = tmp_path / "zero-shot"
    assert main(["model", "export", "blip2-opt-lora", "--untrained", "--size", "tiny", "--out", str(out), "--seed", "3"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["trained_on"].startswith("nothing")
    loaded = ReportGenerator.from_pretrained(str(out)).state_dict()
    torch.manual_seed(3)
    built = build_model(load_recipe("blip2-opt-lora", size="tiny")).state_dict()
    assert loaded.keys() == built.keys()
    assert all(torch.equal(loaded[k], built[k]) for k in built)
    # LoRA starts as a no-op (B = 0): the exported decoder is the base decoder, i.e. zero-shot
    lora_b = [k for k in built if "lora_B" in k]
    assert lora_b and all(not loaded[k].any() for k in lora_b)

    manifest = phantom_manifest(tmp_path / "phantom")
    preds, scores = tmp_path / "pred.jsonl", tmp_path / "scores.json"
    assert main(["generate", str(manifest), "--model", str(out), "--out", str(preds), "--greedy", "--max-new-tokens", "4",
                 "--no-progress", "--device", "cpu"]) == 0
    assert main(["evaluate", "--pred", str(preds), "--ref", str(manifest), "--metrics", "bleu,rouge_l", "--bootstrap", "0",
                 "--out", str(scores)]) == 0
    assert scores.is_file()


def test_overrides_without_untrained_are_refused(tmp_path, capsys):
    assert main(["model", "export", "somewhere", "--size", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "only apply with --untrained" in capsys.readouterr().err
