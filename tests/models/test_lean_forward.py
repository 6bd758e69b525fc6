"""The lean inference forward (radgen.models.lean_forward) returns transformers' hidden states at every real position."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from radgen.models import fast
from radgen.models.lean_forward import FusedPart, LeanLlamaModel, use_lean_forward
from tests.generate.fixtures import tiny_model


def _causal_lm(model_type: str = "llama", attn: str = "sdpa"):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=6, num_key_value_heads=2, attn_implementation=attn)
    return AutoModelForCausalLM.from_config(config).eval()


def _pair(attn: str = "sdpa", pack: bool = False, fuse: bool = True):
    """(transformers' body, the same weights with the lean forward); pack: the reference's Linears
    packed for oneDNN; fuse: the lean one's projections fused (into packed Linears, where this CPU packs)."""
    reference = _causal_lm(attn="sdpa" if attn == "grouped" else attn)
    if attn == "grouped":
        from radgen.models.attention import use_grouped_attention

        assert use_grouped_attention(reference)
    if pack:
        fast.pack_linears(reference)
    lean = copy.deepcopy(reference)
    packs = fuse and fast.packing_supported(torch.float32)
    assert use_lean_forward(lean.model, pack=(lambda layer: True) if packs else None) and type(lean.model) is LeanLlamaModel
    return reference.model, lean.model


def _real(mask: torch.Tensor, width: int) -> torch.Tensor:
    return mask[:, -width:].bool()


@pytest.mark.parametrize("attn,pack,fuse", [("sdpa", False, True), ("sdpa", False, False), ("eager", False, True),
                                            ("grouped", False, True), ("sdpa", True, True)])
def test_prefill_and_drafted_passes_equal_transformers(attn, pack, fuse):
    if pack and not fast.packing_supported(torch.float32):
        pytest.skip("this build cannot pack fp32 weights for oneDNN")
    hf, lean = _pair(attn, pack, fuse)
    gen = torch.Generator().manual_seed(1)
    # a left-padded prefill with per-row positions, then a drafted pass with rejected (holed) and
    # right-padded positions, then the cache cut to the rows still decoding and one more step
    prefill = torch.randn(3, 7, 48, generator=gen)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :3] = 0
    mask[2, :1] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = [DynamicCache(), DynamicCache()]
    with torch.no_grad():
        want, got = (body(inputs_embeds=prefill, attention_mask=mask, position_ids=positions, use_cache=True, cache=cache).last_hidden_state
                     for body, cache in zip((hf, lean), caches))
        assert torch.allclose(got[_real(mask, 7)], want[_real(mask, 7)], atol=1e-6, rtol=0)
        assert (got[~_real(mask, 7)] == 0).all()  # padding comes out as zeros
        step = torch.randn(3, 4, 48, generator=gen)
        mask = torch.cat([mask, torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])], dim=1)
        mask[1, 5] = 0  # a rejected position of an earlier pass: masked for good
        positions = positions[:, -1:] + 1 + torch.arange(4)
        want, got = (body(inputs_embeds=step, attention_mask=mask, position_ids=positions, use_cache=True, cache=cache).last_hidden_state
                     for body, cache in zip((hf, lean), caches))
        assert torch.allclose(got[_real(mask, 4)], want[_real(mask, 4)], atol=1e-6, rtol=0)
        for cache in caches:
            cache.batch_select_indices(torch.tensor([0, 2]))
        mask = torch.cat([mask[[0, 2]], torch.ones(2, 1, dtype=torch.long)], dim=1)
        positions = positions[[0, 2], -1:] + 1
        step = torch.randn(2, 1, 48, generator=gen)
        want, got = (body(inputs_embeds=step, attention_mask=mask, position_ids=positions, use_cache=True, cache=cache).last_hidden_state
                     for body, cache in zip((hf, lean), caches))
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
        real = mask.bool()
        for a, b in zip(caches[0].layers, caches[1].layers):  # the same keys and values cached at the real positions
            assert torch.allclose(a.keys.transpose(1, 2)[real], b.keys.transpose(1, 2)[real], atol=1e-6, rtol=0)
            assert torch.allclose(a.values.transpose(1, 2)[real], b.values.transpose(1, 2)[real], atol=1e-6, rtol=0)


def test_calls_without_a_cache_mask_or_positions_equal_transformers():
    hf, lean = _pair()
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(input_ids=ids, use_cache=False).last_hidden_state
        out = lean(input_ids=ids, use_cache=False)
        assert torch.allclose(out.last_hidden_state, want, atol=1e-6, rtol=0)
        cache = lean(input_ids=ids, use_cache=True).cache  # a fresh cache, as transformers makes one
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 5
        nxt = torch.randint(0, 128, (2, 1), generator=torch.Generator().manual_seed(3))
        reference_cache = hf(input_ids=ids, use_cache=True).cache
        assert torch.allclose(lean(input_ids=nxt, cache=cache).last_hidden_state,
                              hf(input_ids=nxt, cache=reference_cache).last_hidden_state, atol=1e-6, rtol=0)


def test_calls_it_does_not_cover_take_transformers_forward():
    _, lean = _pair("eager")  # transformers returns attention weights from its eager attention
    entered = []
    lean.layers[0].register_forward_pre_hook(lambda module, args: entered.append(1))  # the lean forward calls no layer module
    ids = torch.randint(0, 128, (1, 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        lean(input_ids=ids)
        assert not entered
        out = lean(input_ids=ids, output_attentions=True)  # attention maps: transformers' path returns them
        assert len(entered) == 1 and out.attentions is not None and len(out.attentions) == 2
    lean(input_ids=ids)  # autograd recording (training, gradient explanations)
    assert len(entered) == 2


def test_other_bodies_are_left_alone():
    assert not use_lean_forward(_causal_lm("qwen2").model)
    assert not use_lean_forward(_causal_lm("gpt2").transformer)
    _, lean = _pair()
    assert not use_lean_forward(lean)  # already lean
    assert type(copy.deepcopy(lean)) is LeanLlamaModel


def test_prepare_for_inference_installs_it_and_decodes_the_same_reports(monkeypatch):
    reference = tiny_model("radgen-small")
    model = copy.deepcopy(reference)
    fast.prepare_for_inference(model, "float32")
    assert type(fast.base_model(model.decoder).get_decoder()) is LeanLlamaModel
    findings = [["Cardiomegaly"], [], ["Pleural Effusion", "Atelectasis", "Edema"]]
    pixels = torch.randn(3, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(5))
    for draft_tokens, beams in ((0, 1), (6, 1), (0, 2)):  # HF greedy, drafted greedy, HF beam search
        kwargs = dict(pixel_values=pixels, findings=findings, num_beams=beams, max_new_tokens=16, draft_tokens=draft_tokens)
        for a, b in zip(reference.generate(**kwargs), model.generate(**kwargs)):
            assert b.token_ids == a.token_ids
            assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)
    for variable, value, lean, fused in ((fast.LEAN_ENV, "unfused", True, False), (fast.LEAN_ENV, "0", False, False),
                                         (fast.NO_FAST_PATHS_ENV, "1", False, False)):
        monkeypatch.setenv(variable, value)
        other = copy.deepcopy(reference)
        fast.prepare_for_inference(other, "float32")
        body = fast.base_model(other.decoder).get_decoder()
        assert (type(body) is LeanLlamaModel) is lean and (type(body.layers[0].self_attn.q_proj) is FusedPart) is fused
        monkeypatch.delenv(variable)


@pytest.mark.parametrize("pack", [False, True])
def test_fused_projections_keep_the_weights_and_transformers_own_forward(pack):
    if not fast.packing_supported(torch.float32):
        pytest.skip("this build cannot pack fp32 weights for oneDNN: nothing is fused")
    hf, lean = _pair(pack=pack)
    attention, mlp = lean.layers[1].self_attn, lean.layers[1].mlp
    parts = [attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj]
    assert all(type(part) is FusedPart for part in parts)
    assert attention.q_proj.fused is attention.v_proj.fused and mlp.gate_proj.fused is mlp.up_proj.fused
    assert torch.equal(attention.k_proj.weight, hf.layers[1].self_attn.k_proj.weight)
    assert torch.equal(mlp.up_proj.weight, hf.layers[1].mlp.up_proj.weight)
    # no weight kept twice: a layer's Linears are the two fused ones, o_proj and down_proj
    for layer in lean.layers:
        assert len({id(m) for m in layer.modules() if type(m) in (nn.Linear, fast.PackedLinear)}) == 4
    # where packing does not pay for a fused shape, its parts stay as they are
    _, unfused = _pair(fuse=False)
    assert type(unfused.layers[0].mlp.up_proj) is nn.Linear
    partly = _causal_lm().model
    assert use_lean_forward(partly, pack=lambda layer: layer.out_features == 2 * partly.config.intermediate_size)
    assert type(partly.layers[0].self_attn.q_proj) is nn.Linear and type(partly.layers[0].mlp.up_proj) is FusedPart
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = hf(input_ids=ids).last_hidden_state
        assert torch.allclose(lean(input_ids=ids).last_hidden_state, want, atol=1e-6, rtol=0)
    # with autograd on, transformers' forward calls each part on its own
    assert torch.allclose(lean(input_ids=ids).last_hidden_state.detach(), want, atol=1e-6, rtol=0)


def test_bfloat16_bodies_equal_transformers():
    # the bf16 default on CPUs that compute it natively: RMSNorm statistics in fp32, the rest in bf16
    hf, lean = _pair(fuse=False)
    hf, lean = hf.to(torch.bfloat16), lean.to(torch.bfloat16)
    embeds = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        want = hf(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        got = lean(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    assert torch.equal(got[mask.bool()], want[mask.bool()])


def test_without_the_transformers_it_needs_decoding_keeps_transformers_forward(monkeypatch, caplog):
    import logging
    import sys

    monkeypatch.setitem(sys.modules, "radgen.models.lean_forward", None)  # importing it raises ImportError
    fast._note_once.cache_clear()
    model = tiny_model("radgen-small")
    with caplog.at_level(logging.INFO, logger="radgen.models.fast"):
        fast.prepare_for_inference(model, "float32")
    assert type(fast.base_model(model.decoder).get_decoder()) is not LeanLlamaModel
    assert any("lean decoder forward needs a newer transformers" in r.getMessage() for r in caplog.records)
    fast._note_once.cache_clear()
