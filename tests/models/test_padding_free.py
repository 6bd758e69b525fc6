"""Padding-free position-wise layers (radgen.models.padding_free) change no real position's output."""

from __future__ import annotations

import copy

import pytest
import torch

from radgen.models import fast, lean_forward, padding_free
from radgen.models.padding_free import use_padding_free_layers
from tests.generate.fixtures import tiny_model


def _llama(model_type: str = "llama"):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=6, num_key_value_heads=2, attn_implementation="sdpa")
    return AutoModelForCausalLM.from_config(config).eval()


def _spy(model) -> list[tuple[int, ...]]:
    """Shapes of the inputs the first MLP receives (recorded after padding_free's own hook has run)."""
    shapes: list[tuple[int, ...]] = []
    model.model.layers[0].mlp.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    return shapes


IDS = torch.tensor([[0, 0, 0, 5, 9, 33, 20], [4, 8, 15, 16, 23, 42, 11], [0, 0, 0, 0, 0, 7, 3]])
MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7, [0, 0, 0, 0, 0, 1, 1]])


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_real_positions_get_the_same_outputs_and_padding_becomes_finite(model_type):
    model = _llama(model_type)
    with torch.no_grad():
        want = model(input_ids=IDS, attention_mask=MASK).logits
    assert use_padding_free_layers(model.model) == 2 * 5  # per block: the MLP and q/k/v/o
    assert use_padding_free_layers(model.model) == 0  # once only
    shapes = _spy(model)
    with torch.no_grad():
        got = model(input_ids=IDS, attention_mask=MASK).logits
    assert shapes == [(1, int(MASK.sum()), 48)]  # the MLP saw the 13 real positions, not 3 x 7
    real = MASK.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()


def test_calls_without_enough_padding_or_with_autograd_run_unchanged():
    model = _llama()
    use_padding_free_layers(model.model)
    shapes = _spy(model)
    full = torch.ones_like(MASK)
    with torch.no_grad():
        model(input_ids=IDS, attention_mask=full)  # no padding at all
    model(input_ids=IDS, attention_mask=MASK)  # autograd on: training and gradient explanations
    assert shapes == [(3, 7, 48), (3, 7, 48)]


def test_cached_decoding_with_left_padded_prompts_is_unchanged():
    # HF greedy with a KV cache: the prefill compacts (left padding), the one-token steps do not
    model = _llama()
    with torch.no_grad():
        want = model.generate(input_ids=IDS, attention_mask=MASK, max_new_tokens=8, do_sample=False, pad_token_id=0,
                              output_scores=True, return_dict_in_generate=True)
    use_padding_free_layers(model.model)
    with torch.no_grad():
        got = model.generate(input_ids=IDS, attention_mask=MASK, max_new_tokens=8, do_sample=False, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_unsupported_decoders_are_left_alone():
    model = _llama()
    model.config.model_type = "gpt2"  # a decoder whose blocks this module does not know
    assert use_padding_free_layers(model.model) == 0


def test_a_failed_call_does_not_leave_its_positions_behind():
    model = _llama()
    use_padding_free_layers(model.model)
    with pytest.raises(Exception), torch.no_grad():
        model(input_ids=IDS, attention_mask=MASK, position_ids=torch.zeros(3, 2, dtype=torch.long))  # wrong shape: raises
    assert padding_free._REAL_POSITIONS.get() is None


def test_drafted_decoding_with_edits_and_rescoring_is_unchanged(monkeypatch):
    # the whole inference path: left-padded prompts naming different findings, drafted passes with
    # ragged drafts, findings edits re-scored on the prefill cache; every call compacts (COMPACT_BELOW > 1).
    # Llama bodies run radgen.models.lean_forward at inference, which drops padding itself and calls no
    # module hooks: off here, so the hooks are what runs (they serve the calls it leaves to transformers)
    monkeypatch.setattr(lean_forward, "use_lean_forward", lambda body, **options: False)
    reference = tiny_model("radgen-small")
    model = copy.deepcopy(reference)
    monkeypatch.setattr(fast, "use_padding_free_layers", lambda body: 0)
    fast.prepare_for_inference(reference, "float32")
    monkeypatch.setattr(fast, "use_padding_free_layers", use_padding_free_layers)
    monkeypatch.setattr(padding_free, "COMPACT_BELOW", 1.01)
    fast.prepare_for_inference(model, "float32")
    assert getattr(fast.base_model(model.decoder).get_decoder(), "_radgen_padding_free", False)
    findings = [["Cardiomegaly"], [], ["Pleural Effusion", "Atelectasis", "Edema"], ["Pneumothorax"]]
    pixels = torch.randn(4, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(4))
    shapes = _spy(fast.base_model(model.decoder))
    for draft_tokens in (0, 6, 6):  # HF greedy, then drafted from a cold and a warm table
        kwargs = dict(pixel_values=pixels, findings=findings, num_beams=1, max_new_tokens=20, draft_tokens=draft_tokens)
        want, got = reference.generate(**kwargs), model.generate(**kwargs)
        for a, b in zip(want, got):
            assert b.token_ids == a.token_ids and b.text == a.text
            assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-5)
    assert shapes and all(shape[0] == 1 for shape in shapes)  # every call went through the compacted path
