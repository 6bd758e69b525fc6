"""radgen-small at tiny size: the contract every other area codes against."""

import torch

from radgen.models import ReportGenerator
from radgen.data.images import ImageTransform

from tests.models.conftest import REPORTS, pixels, tiny


def test_tokenize_reports_masks_prompt_and_padding(small):
    batch = small.tokenize_reports(REPORTS)
    prefix = len(small.prefix_ids())
    assert prefix >= 1  # bos + "Findings:"
    assert (batch["labels"][:, :prefix] == -100).all()
    # padding is masked out of attention and loss; every real report token is a label
    assert ((batch["attention_mask"] == 0) <= (batch["labels"] == -100)).all()
    short = batch["attention_mask"].sum(1).argmin()
    assert batch["attention_mask"][short, -1] == 0
    # the last real token is eos and is a label (so the model learns to stop)
    length = int(batch["attention_mask"][0].sum())
    assert batch["labels"][0, length - 1] == small.tokenizer.eos_token_id
    truncated = small.tokenize_reports(REPORTS, max_tokens=3)
    assert int((truncated["labels"][0] != -100).sum()) == 4  # 3 report tokens + eos


def test_forward_loss_backward_only_stage_params_get_gradients(small):
    small.set_trainable(small.recipe.stages[0].train)
    small.train()
    assert not small.encoder.training  # frozen encoder stays in eval (batch-norm statistics)
    batch = small.tokenize_reports(REPORTS)
    out = small(**batch, pixel_values=pixels(small))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape[1] == small.num_visual_tokens + batch["input_ids"].shape[1]
    small.zero_grad()
    out.loss.backward()
    with_grad = {n for n, p in small.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad
    for name in with_grad:
        assert name.startswith("connector.") or "lora_" in name, name
    assert any("lora_B" in n for n in with_grad) and any(n.startswith("connector.") for n in with_grad)
    small.zero_grad()
    small.eval()


def test_image_features_path_equals_pixel_path(small):
    px = pixels(small)
    batch = small.tokenize_reports(REPORTS)
    with torch.no_grad():
        a = small(**batch, pixel_values=px).logits
        b = small(**batch, image_features=small.encode_images(px)).logits
    assert torch.equal(a, b)
    assert small.encode_images(px).shape == (2, small.encoder.num_tokens(), small.encoder.hidden_size)


def test_generate_greedy_beam_sampling(small):
    px = pixels(small)
    for options in ({"num_beams": 1}, {"num_beams": 3}, {"num_beams": 1, "do_sample": True, "top_p": 0.9, "temperature": 0.8},
                    {"num_beams": 2, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2}):
        reports = small.generate(pixel_values=px, max_new_tokens=6, **options)
        assert len(reports) == 2
        for report in reports:
            assert len(report.token_ids) == len(report.token_logprobs) == len(report.tokens) <= 6
            assert all(lp <= 1e-6 for lp in report.token_logprobs)
            assert report.text == small.tokenizer.decode(report.token_ids, skip_special_tokens=True).strip()


def test_greedy_logprobs_are_the_model_probabilities(small):
    """Teacher-force the greedy output: forward's log-softmax must equal the reported logprobs."""
    px = pixels(small, batch=1)
    report = small.generate(pixel_values=px, num_beams=1, max_new_tokens=5)[0]
    prefix = torch.tensor([small.prefix_ids() + report.token_ids])
    with torch.no_grad():
        logits = small(prefix, torch.ones_like(prefix), pixel_values=px).logits[0].log_softmax(-1)
    start = small.num_visual_tokens + len(small.prefix_ids()) - 1
    expected = [float(logits[start + i, t]) for i, t in enumerate(report.token_ids)]
    assert torch.allclose(torch.tensor(expected), torch.tensor(report.token_logprobs), atol=1e-4)
    assert report.token_ids == [int(logits[start + i].argmax()) for i in range(len(report.token_ids))]


def test_attentions_expose_visual_positions(small):
    batch = small.tokenize_reports(REPORTS[:1])
    with torch.no_grad():
        out = small(**batch, pixel_values=pixels(small, 1), output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == 2
    seq = small.num_visual_tokens + batch["input_ids"].shape[1]
    assert out.attentions[0].shape[-2:] == (seq, seq)
    assert out.num_visual_tokens == small.num_visual_tokens == 4


def test_image_transform_comes_from_encoder(small):
    assert isinstance(small.image_transform, ImageTransform)
    from PIL import Image

    tensor = small.image_transform(Image.new("L", (100, 80), 128))
    assert tensor.shape == (3, 64, 64)


def test_save_load_roundtrip_identical(small, tmp_path):
    small.requires_grad_(False)
    small.eval()
    px, batch = pixels(small), small.tokenize_reports(REPORTS)
    small.save_pretrained(tmp_path / "m")
    loaded = ReportGenerator.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(small(**batch, pixel_values=px).logits, loaded(**batch, pixel_values=px).logits)
    assert [r.token_ids for r in small.generate(pixel_values=px, num_beams=2, max_new_tokens=5)] == \
           [r.token_ids for r in loaded.generate(pixel_values=px, num_beams=2, max_new_tokens=5)]
    assert loaded.tokenizer.get_vocab() == small.tokenizer.get_vocab()
    assert loaded.recipe.name == small.recipe.name


def test_set_trainable_patterns_and_counts(small):
    n = small.set_trainable(["connector"])
    counts = small.parameter_counts()
    assert n == counts["connector"][0] == counts["connector"][1] == small.trainable_parameter_count()
    assert counts["encoder"][1] == 0 and counts["decoder"][1] == 0
    n_lora = small.set_trainable(["decoder.*lora_*"])
    assert n_lora == sum(p.numel() for name, p in small.named_parameters() if "lora_" in name)
    assert small.set_trainable(["encoder", "connector", "findings", "decoder"]) == sum(p.numel() for p in small.parameters())
    import pytest

    from radgen.errors import ConfigError

    with pytest.raises(ConfigError, match="match no parameter"):
        small.set_trainable(["decodr.*"])
    small.requires_grad_(False)


def test_mapping_layer_starts_at_text_embedding_scale_and_standardizes_features(small):
    weight = small.decoder.get_input_embeddings().weight.detach().float()
    rms = float((weight ** 2).mean().sqrt())
    assert torch.allclose(small.connector.norm.weight, torch.full_like(small.connector.norm.weight, rms))
    # the encoder features share a large common offset; standardization removes it, so two images
    # that differ only slightly still give clearly different visual tokens
    import copy

    torch.manual_seed(0)
    connector = copy.deepcopy(small.connector).train()
    for module in connector.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0  # train mode for batch statistics, without dropout noise in the comparison
    width = connector.input_projection.in_features
    base = 5.0 + 0.1 * torch.randn(8, 3, width)
    out = connector(base)
    spread = (out - out.mean(0)).norm(dim=-1).mean() / out.norm(dim=-1).mean()
    from radgen.models.connectors import MappingLayer

    plain = MappingLayer(width, out.shape[-1], out.shape[1], connector.layers.layers[0].self_attn.num_heads, 1.0, 0.0,
                         standardize_features=False).train()
    plain.load_state_dict({k: v for k, v in connector.state_dict().items() if not k.startswith("feature_norm.")})
    plain_out = plain(base)
    plain_spread = (plain_out - plain_out.mean(0)).norm(dim=-1).mean() / plain_out.norm(dim=-1).mean()
    assert spread > 3 * plain_spread
