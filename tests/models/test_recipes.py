"""Every shipped recipe and variant at tiny size: forward, loss, per-stage gradients, generate, save/load."""

import fnmatch

import pytest
import torch

from radgen.config import load_recipe, recipe_names
from radgen.models import ReportGenerator, build_model

from tests.models.conftest import REPORTS, pixels

RECIPES = [
    "radgen-small",
    "blip2-opt-lora",
    "blip-captioning",
    "blip-captioning:full",
    "blip-captioning:decoder-only",
    "blip-captioning:encoder-only",
    "llava-two-stage:findings",
    "llava-two-stage:impression",
    "resnet-mapper-lora",
    "resnet-mapper-lora:gpt2-large",
    "resnet-mapper-lora:openllama-7b",
    "clipcap-prefix",
    "clipcap-prefix:gpt2-medium",
    "clipcap-prefix:qwen1.5-0.5b",
    "clipcap-prefix:finetune",
]


def test_every_shipped_recipe_and_variant_is_covered():
    import yaml

    from radgen.config import RECIPE_DIR

    expected = set()
    for name in recipe_names():
        expected.add(name)
        variants = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text()).get("variants") or {}
        expected.update(f"{name}:{v}" for v in variants)
    assert expected - {"llava-two-stage"} <= set(RECIPES)


def _expected_trainable(model, patterns):
    names = set()
    for name, _ in model.named_parameters():
        if any(p == name.split(".")[0] or fnmatch.fnmatchcase(name, p) for p in patterns):
            names.add(name)
    return names


@pytest.mark.parametrize("name", RECIPES)
def test_tiny_recipe_trains_generates_and_round_trips(name, tmp_path):
    torch.manual_seed(0)
    recipe = load_recipe(name, size="tiny")
    model = build_model(recipe)
    total_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert total_bytes < 8e6, f"tiny {name} is {total_bytes / 1e6:.1f} MB"
    px = pixels(model)
    batch = model.tokenize_reports(REPORTS, max_tokens=20)

    for stage in recipe.stages:
        count = model.set_trainable(stage.train)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == _expected_trainable(model, stage.train)
        assert count == sum(p.numel() for n, p in model.named_parameters() if n in trainable) > 0
        model.train()
        model.zero_grad(set_to_none=True)
        # grounded recipes train their finding head from finding targets (all absent here)
        targets = {"finding_targets": torch.zeros(len(REPORTS), len(model.findings.observations))} if hasattr(model, "findings") else {}
        out = model(**batch, pixel_values=px, **targets)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        got_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert got_grad <= trainable  # frozen parameters never receive gradients
        nonzero = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        for pattern in stage.train:  # every group the stage trains does learn
            group = _expected_trainable(model, [pattern])
            if group:
                assert group & nonzero, f"{name} stage {stage.name}: nothing in '{pattern}' got a gradient"
        model.zero_grad(set_to_none=True)

    model.eval()
    reports = model.generate(pixel_values=px, num_beams=2, max_new_tokens=4)
    assert len(reports) == 2 and all(len(r.token_ids) == len(r.token_logprobs) <= 4 for r in reports)

    model.save_pretrained(tmp_path / "model")
    loaded = ReportGenerator.from_pretrained(tmp_path / "model")
    model.requires_grad_(False)
    with torch.no_grad():
        assert torch.equal(model(**batch, pixel_values=px).logits, loaded(**batch, pixel_values=px).logits)
    assert [r.token_ids for r in loaded.generate(pixel_values=px, num_beams=2, max_new_tokens=4)] == [r.token_ids for r in reports]


def test_blip_cross_attention_maps_cover_the_image_tokens():
    torch.manual_seed(0)
    model = build_model(load_recipe("blip-captioning", size="tiny"))
    batch = model.tokenize_reports(REPORTS[:1])
    with torch.no_grad():
        out = model(**batch, pixel_values=pixels(model, 1), output_attentions=True)
    assert out.num_visual_tokens == model.num_visual_tokens == 17  # 4x4 patches + CLS
    assert len(out.cross_attentions) == 2
    maps = out.cross_attentions[0]
    assert maps.shape == (1, 4, batch["input_ids"].shape[1], 17)
    torch.testing.assert_close(maps.sum(-1), torch.ones_like(maps.sum(-1)))  # a distribution over image tokens
