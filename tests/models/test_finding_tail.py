"""A finding head with its own copy of the encoder's last blocks (model.findings.tune_encoder_blocks)."""

import copy

import pytest
import torch

from radgen.errors import ConfigError
from radgen.models import ReportGenerator
from tests.models.conftest import pixels, tiny


@pytest.fixture(scope="module")
def tailed():
    return tiny("radgen-small", "model.findings.tune_encoder_blocks=2").eval()


def test_split_forward_is_the_encoder_forward_plus_its_trunk(tailed):
    images = pixels(tailed)
    tokens, trunk = tailed.encoder.split_forward(images, 2)
    torch.testing.assert_close(tokens, tailed.encoder(images))
    # the trunk is what the last two blocks read: running them and the head conv on it gives the tokens
    model = tailed.encoder.model
    grid = model.bn2(model.conv_head(model.blocks[-1](model.blocks[-2](trunk))))
    torch.testing.assert_close(grid.flatten(2).transpose(1, 2), tokens)
    assert tailed.encoder.split_forward(images, 2, tokens=False)[0] is None


def test_the_tail_starts_as_a_copy_and_trains_apart_from_the_encoder(tailed):
    head = tailed.findings
    assert head.tail_blocks == 2
    encoder_blocks = tailed.encoder.model.blocks
    for copied, original in zip(head.tail[0].parameters(), encoder_blocks[-2].parameters()):
        assert torch.equal(copied, original) and copied.data_ptr() != original.data_ptr()
    # the recipe trains `findings`: the tail is among the trainable weights, the encoder is not
    trainable = {name for name, p in tailed.named_parameters() if p.requires_grad}
    assert any(name.startswith("findings.tail.") for name in trainable)
    assert not any(name.startswith("encoder.") for name in trainable)


def test_head_reads_the_trunk_and_its_batch_norm_stays_frozen_in_training(tailed):
    model = copy.deepcopy(tailed)
    images = pixels(model)
    features, head_input = model.features_and_head_input(pixel_values=images)
    assert head_input.dim() == 4 and features.dim() == 3
    torch.testing.assert_close(head_input, model.head_input(images))
    logits = model.finding_logits(head_input)
    # the same as running the tail by hand on the trunk, then the head on its tokens
    grid = model.findings.tail(head_input)
    pooled = torch.cat([grid.flatten(2).mean(2), grid.flatten(2).amax(2)], dim=-1)
    expected = model.findings.classify(torch.cat([pooled, torch.zeros_like(pooled), pooled.new_zeros(len(pooled), 1)], dim=-1))
    torch.testing.assert_close(logits, expected)
    model.train()
    batch_norms = [m for m in model.findings.tail.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert batch_norms and not any(m.training for m in batch_norms)
    stats = [m.running_mean.clone() for m in batch_norms]
    model.finding_logits(model.head_input(images)).sum().backward()
    assert all(torch.equal(m.running_mean, s) for m, s in zip(batch_norms, stats))
    assert model.findings.tail[0].parameters().__next__().grad is not None


def test_generate_and_save_load_keep_the_tail(tailed, tmp_path):
    images = pixels(tailed)
    probs, _ = tailed.predict_findings(pixel_values=images)
    reports = tailed.generate(pixel_values=images, num_beams=1, max_new_tokens=4)
    assert [r.finding_probs["Cardiomegaly"] for r in reports] == pytest.approx(probs[:, 1].tolist(), abs=1e-4)  # reports round to 4 places
    # tuning the tail changes the head's answer, not the decoder's visual input
    changed = copy.deepcopy(tailed)
    with torch.no_grad():
        for p in changed.findings.tail.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(changed.predict_findings(pixel_values=images)[0], probs)
    torch.testing.assert_close(changed.visual_tokens(pixel_values=images), tailed.visual_tokens(pixel_values=images))
    changed.save_pretrained(tmp_path / "m")
    loaded = ReportGenerator.from_pretrained(tmp_path / "m")
    assert loaded.recipe.model.findings.tune_encoder_blocks == 2
    torch.testing.assert_close(loaded.predict_findings(pixel_values=images)[0], changed.predict_findings(pixel_values=images)[0])


def test_cached_features_alone_are_a_clear_error_for_a_tail_head(tailed):
    features = tailed.encode_images(pixels(tailed))
    with pytest.raises(ConfigError, match="tune_encoder_blocks=2.*pass pixel_values"):
        tailed.predict_findings(image_features=features)


def test_bad_tail_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="tune_encoder_blocks must be 0..7"):
        tiny("radgen-small", "model.findings.tune_encoder_blocks=9")
    with pytest.raises(ConfigError, match="tune_encoder_blocks must be >= 0"):
        tiny("radgen-small", "model.findings.tune_encoder_blocks=-1")


def test_inference_layout_keeps_the_heads_answer(tailed, tmp_path):
    from radgen.models.fast import prepare_for_inference

    model = copy.deepcopy(tailed)
    generator = torch.Generator().manual_seed(0)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # trained-like statistics, so folding them matters
        for tensor in (norm.running_mean, norm.weight.data, norm.bias.data):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)
    images = pixels(model)
    before = model.predict_findings(pixel_values=images)[0]
    tokens = model.visual_tokens(images)
    prepare_for_inference(model, "float32")
    # the encoder's and the tail's batch norms are folded into their convolutions, answers unchanged
    assert model.batch_norms_folded and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model.predict_findings(pixel_values=images)[0], before, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.visual_tokens(images), tokens, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="prepared for inference"):  # its batch-norm weights are gone
        model.save_pretrained(str(tmp_path / "folded"))


@pytest.mark.parametrize("recipe, message", [
    ("resnet-mapper-lora", "is not stem → blocks → head conv"),  # a timm CNN of another layout
    ("llava-two-stage", "has no block stages to copy"),  # a transformers vision tower
])
def test_encoders_without_copyable_blocks_say_so(recipe, message):
    with pytest.raises(ConfigError, match=message):
        tiny(recipe, "model.findings.enabled=true", "model.findings.tune_encoder_blocks=1")
