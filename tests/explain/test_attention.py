"""Attention capture and composition, the gradient fallback, and `radgen explain` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from radgen.cli import main
from radgen.data.study import read_manifest
from radgen.explain import attention
from radgen.explain.pipeline import explain_studies
from tests.generate.fixtures import tiny_model

REPORTS = {"s2": "mild cardiomegaly . small right pleural effusion .", "s3": "left lower lobe atelectasis . no pneumothorax ."}


def test_encoder_grid():
    assert attention.encoder_grid(49) == (0, 7)
    assert attention.encoder_grid(50) == (1, 7)  # CLS + 7x7
    assert attention.encoder_grid(17) == (1, 4)
    assert attention.encoder_grid(1) is None and attention.encoder_grid(3) is None


def test_mapping_layer_attention_matches_manual(saved_small):
    model = saved_small[1]
    torch.manual_seed(0)
    features = torch.randn(2, 4, model.encoder.hidden_size)
    captured = attention.connector_attention(model, features)
    # recompute the one decoder layer by hand: pre-norm self-attention, then cross-attention weights
    layer = model.connector.layers.layers[0]
    with torch.no_grad():
        memory = model.connector.input_projection(features)
        x = model.connector.queries.unsqueeze(0).expand(2, -1, -1)
        x = x + layer._sa_block(layer.norm1(x), None, None)
        _, weights = layer.multihead_attn(layer.norm2(x), memory, memory, need_weights=True)
    assert captured.shape == (2, model.num_visual_tokens, 4)
    assert torch.allclose(captured, weights, atol=1e-5)
    assert torch.allclose(captured.sum(-1), torch.ones(2, model.num_visual_tokens), atol=1e-5)


def test_decoder_maps_and_share(saved_small):
    model = saved_small[1]
    ids = [model.tokenizer(" mild cardiomegaly .", add_special_tokens=False)["input_ids"]]
    features = model.encode_images(torch.randn(1, 3, 64, 64))
    maps, shares, after_first = attention.decoder_maps(model, features, ids)
    assert maps[0].shape == (len(ids[0]), model.num_visual_tokens)
    assert len(shares[0]) == model.decoder.config.num_hidden_layers
    # the share is the attention mass on the visual tokens: the rows of the (head-averaged) map sum to it
    assert maps[0].sum(-1).mean().item() == pytest.approx(float(np.mean(shares[0])), rel=1e-4)
    assert all(0 < s < 1 for s in shares[0])
    assert all(0 <= a < s for a, s in zip(after_first[0], shares[0]))


def test_gradient_fallback_is_zero_where_features_are_zero(saved_small):
    model = saved_small[1]
    ids = model.tokenizer(" mild cardiomegaly .", add_special_tokens=False)["input_ids"]
    features = torch.zeros(1, 4, model.encoder.hidden_size)
    features[0, 2] = torch.randn(model.encoder.hidden_size)
    (saliency,) = attention._sentence_grad_x_input(model, features, ids, [(0, len(ids))])
    assert saliency.shape == (4,) and (saliency >= 0).all()
    assert saliency[[0, 1, 3]].abs().sum() == 0  # gradient x input vanishes where the input is zero


def test_upsample_peak_overlay():
    heat = np.zeros((2, 2), dtype=np.float32)
    heat[1, 0] = 1.0  # bottom-left cell
    full = attention.upsample(heat, (40, 20))
    assert full.shape == (20, 40)
    x, y = attention.peak(full)
    assert x < 20 and y >= 10
    crop = attention.upsample(heat, (40, 20), resize="shortest_edge_crop")  # centre 20x20 square
    assert crop[:, :10].max() == 0 and crop[:, 30:].max() == 0
    # "pad": a 40x40 square centred on the 40x20 image; its top and bottom rows (10 each) are fill,
    # so the bottom-left cell lands on rows 10..19 of the image, the top cells are cut off
    padded = attention.upsample(heat, (40, 20), resize="pad")
    assert padded.shape == (20, 40) and padded[:, :20].max() > 0.9 and padded[:, 20:].max() < 0.6
    assert padded[:5, :10].max() < padded[15:, :10].max()
    image = attention.overlay(Image.new("L", (40, 20), 128), full)
    assert image.size == (40, 20) and image.mode == "RGB"


def test_explain_cli_end_to_end(saved_small, phantom, tmp_path):
    folder, _ = saved_small
    manifest, root = phantom
    out = tmp_path / "explain"
    assert main(["explain", "--model", str(folder), "--data", str(manifest), "--out", str(out), "--split", "test",
                 "--limit", "2", "--grounding", "--per-word", "--num-beams", "1", "--max-new-tokens", "6"]) == 0
    rows = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["study_id"] for r in rows] == ["s3", "s4"]
    for row in rows:
        assert row["method"] == "composed_attention" and row["grid"] == [2, 2]
        for sentence in row["sentences"]:
            with Image.open(out / sentence["png"]) as png:
                assert png.size == tuple(row["image_size"]) == (64, 64)
    share = json.loads((out / "attention_share.json").read_text())
    assert len(share["layers"]) == len(share["layers_without_first_position"]) == 2 and (out / "attention_share.png").is_file()
    grounding = json.loads((out / "grounding.json").read_text())
    assert grounding["summary"]["studies"] == 2 and "pointing_game" in grounding["summary"]


def test_explain_given_reports_on_phantom(saved_small, phantom, tmp_path):
    model = saved_small[1]
    manifest, root = phantom
    studies = [s for s in read_manifest(manifest) if s.study_id in REPORTS]
    preds = {sid: {"study_id": sid, "findings": text} for sid, text in REPORTS.items()}
    summary = explain_studies(model, studies, tmp_path / "e", root=root, predictions=preds, with_grounding=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "e" / "explanations.jsonl").read_text().splitlines()]
    assert [len(r["sentences"]) for r in rows] == [2, 2]
    g = summary["grounding"]
    # both reports state only rendered findings on the rendered side
    assert g["hallucination"]["rate"] == 0.0 and g["laterality"] == {"checked": 2, "errors": 0, "rate": 0.0}
    assert g["pointing_game"]["trials"] == 3  # cardiomegaly, effusion, atelectasis (each has a PA box)


@pytest.mark.parametrize("name,overrides,method", [
    ("blip-captioning:decoder-only", ["model.encoder.image_size=32"], "cross_attention"),
    ("blip2-opt-lora", ["model.encoder.image_size=32"], "composed_attention"),  # Q-Former cross-attentions
    ("radgen-small", ["model.connector.kind=prefix_mapper", "model.connector.num_layers=1"], "grad_x_input"),
    ("radgen-small", ["model.connector.kind=mlp"], "decoder_attention"),  # visual tokens are the encoder's grid cells
])
def test_explain_other_connectors(name, overrides, method, phantom, tmp_path):
    model = tiny_model(name, *overrides)
    manifest, root = phantom
    studies = [s for s in read_manifest(manifest) if s.study_id == "s2"]
    preds = {"s2": {"study_id": "s2", "findings": REPORTS["s2"]}}
    summary = explain_studies(model, studies, tmp_path / "e", root=root, predictions=preds, progress=False)
    row = json.loads((tmp_path / "e" / "explanations.jsonl").read_text())
    assert summary["methods"] == [method] and row["method"] == method
    assert (summary["attention_share"] is None) == (method == "cross_attention")
    if method == "grad_x_input":
        assert "gradient" in row["notes"][0]
    for sentence in row["sentences"]:
        with Image.open(tmp_path / "e" / sentence["png"]) as png:
            assert png.size == (64, 64)


def test_explain_cli_from_predictions(saved_small, phantom, tmp_path):
    from radgen.io import write_jsonl

    folder, _ = saved_small
    manifest, _ = phantom
    write_jsonl(tmp_path / "p.jsonl", [{"study_id": "s5", "findings": "large left pleural effusion ."}])
    out = tmp_path / "e"
    assert main(["explain", "--model", str(folder), "--data", str(manifest), "--pred", str(tmp_path / "p.jsonl"),
                 "--out", str(out), "--limit", "1", "--grounding", "--gradient"]) == 0
    row = json.loads((out / "explanations.jsonl").read_text())
    assert row["study_id"] == "s5" and row["findings"] == "large left pleural effusion ." and row["method"] == "grad_x_input"
    summary = json.loads((out / "grounding.json").read_text())["summary"]
    assert summary["laterality"] == {"checked": 1, "errors": 0, "rate": 0.0} and summary["pointing_game"]["trials"] == 1
    # a non-phantom manifest cannot be grounded
    from radgen.data.study import Study, write_manifest

    write_manifest(tmp_path / "plain.jsonl", [Study(study_id="s5", images=read_manifest(manifest)[4].images)])
    assert main(["explain", "--model", str(folder), "--data", str(tmp_path / "plain.jsonl"), "--root", str(manifest.parent),
                 "--pred", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "x"), "--grounding"]) == 2
