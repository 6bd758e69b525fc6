"""Grouped-query attention without key/value copies (radgen.models.attention) computes what
transformers' SDPA attention computes."""

from __future__ import annotations

import types

import pytest
import torch

from radgen.models.attention import GROUPED_SDPA, grouped_query_sdpa, use_grouped_attention


def _inputs(batch: int, queries: int, keys: int, heads: int = 6, kv_heads: int = 2, dtype=torch.float32):
    torch.manual_seed(queries * 100 + keys)
    query = torch.randn(batch, heads, queries, 16, dtype=dtype)
    key, value = (torch.randn(batch, kv_heads, keys, 16, dtype=dtype) for _ in range(2))
    # causal over the last `queries` keys, the first row left-padded by 3 and a rejected draft masked out
    mask = torch.ones(batch, 1, queries, keys, dtype=torch.bool).tril(keys - queries)
    mask[0, :, :, :3] = False
    mask[-1, :, :, keys - queries] = False
    own = torch.arange(queries)
    mask[:, :, own, keys - queries + own] = True  # a position always sees itself
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    return module, query, key, value, mask


def _reference(module, query, key, value, mask, scaling):
    """Independent of both SDPA paths: softmax(q kᵀ · scale + mask) v with key/value heads repeated."""
    groups = module.num_key_value_groups
    key, value = key.repeat_interleave(groups, dim=1).double(), value.repeat_interleave(groups, dim=1).double()
    scores = (query.double() @ key.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("queries,keys", [(2, 2), (5, 40), (17, 60)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_equals_transformers_sdpa_and_a_plain_reference(queries, keys, dtype):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module, query, key, value, mask = _inputs(3, queries, keys, dtype=dtype)
    grouped, _ = grouped_query_sdpa(module, query, key, value, mask, scaling=0.25)
    hf, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert grouped.shape == hf.shape == (3, queries, 6, 16) and grouped.is_contiguous()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(grouped.float(), hf.float(), atol=tolerance, rtol=0)
    torch.testing.assert_close(grouped.double(), _reference(module, query, key, value, mask, 0.25), atol=tolerance, rtol=0)


def test_a_mask_shared_by_the_batch_broadcasts_as_in_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module, query, key, value, mask = _inputs(3, 5, 12)
    shared = mask[-1:]  # (1, 1, Q, K)
    grouped, _ = grouped_query_sdpa(module, query, key, value, shared)
    hf, _ = sdpa_attention_forward(module, query, key, value, shared)
    torch.testing.assert_close(grouped, hf, atol=1e-5, rtol=0)


def test_what_it_does_not_cover_goes_to_transformers_sdpa(monkeypatch):
    import transformers.integrations.sdpa_attention as hf_sdpa

    calls = []
    real = hf_sdpa.sdpa_attention_forward
    monkeypatch.setattr(hf_sdpa, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    module, query, key, value, mask = _inputs(2, 4, 10)
    grouped_query_sdpa(module, query, key, value, mask)
    assert calls == []
    grouped_query_sdpa(module, query, key, value, None)  # no mask: its causal kernel
    grouped_query_sdpa(module, query[:, :, :1], key, value, mask[:, :, :1])  # one query: transformers folds heads itself
    grouped_query_sdpa(module, query, key, value, mask.expand(2, 6, 4, 10))  # a mask per head
    assert len(calls) == 3


def _llama(heads: int, kv_heads: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval()


def test_a_grouped_decoder_switches_and_decodes_the_same():
    model = _llama(6, 2)
    ids = torch.tensor([[0, 0, 5, 9, 33, 20, 7], [4, 8, 15, 16, 23, 42, 11]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert use_grouped_attention(model)
    assert model.config._attn_implementation == GROUPED_SDPA
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, want, atol=1e-5, rtol=0)
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0),
                           greedy)


@pytest.mark.parametrize("heads,kv_heads,implementation", [(4, 4, "sdpa"), (6, 2, "eager")])
def test_other_decoders_are_left_alone(heads, kv_heads, implementation):
    model = _llama(heads, kv_heads)
    model.set_attn_implementation(implementation)
    assert not use_grouped_attention(model)
    assert model.config._attn_implementation == implementation
