"""The n-gram draft table's exact behaviour, and drafted greedy on every decoder type it claims.

Written for the survivors of a mutation run over radgen/models/speculative.py (docs/testing.md):
the table's contents, its tie rule, its key budget at the boundary, the unigram fallback, copies
and clearing; and `SUPPORTED_MODEL_TYPES`, whose mistral/qwen2/qwen3/phi3 entries no test built.
"""

from __future__ import annotations

import copy

import pytest
import torch

from radgen.models.speculative import SUPPORTED_MODEL_TYPES, NgramDraft, drafted_greedy, supports_drafting


def test_the_table_holds_every_ngram_up_to_its_order_and_no_longer():
    draft = NgramDraft(max_order=2)
    draft.add([1, 2, 3, 4])
    # orders 1 and 2 with a follower: (1) (2) (3) (1,2) (2,3); the order-3 (1,2,3) is not kept
    assert len(draft) == 5
    assert draft.propose([1, 2, 3], 1) == [4]
    assert draft.propose([1], 5) == [2, 3, 4]


def test_a_tie_keeps_the_continuation_seen_first():
    draft = NgramDraft(max_order=1)
    draft.add([1, 2])
    draft.add([1, 3])
    assert draft.propose([1], 1) == [2]
    draft.add([1, 3])
    assert draft.propose([1], 1) == [3]  # now more frequent


def test_an_unseen_long_suffix_falls_back_to_the_last_token():
    draft = NgramDraft(max_order=3)
    draft.add([1, 2])
    assert draft.propose([7, 8, 1], 1) == [2]  # (7,8,1) and (8,1) unseen: order 1 (1) -> 2
    even = NgramDraft(max_order=2)  # every order is tried, not every other one
    even.add([1, 2])
    even.add([4, 5, 6])
    assert even.propose([7, 1], 1) == [2]  # (7,1) unseen: order 1
    assert NgramDraft(max_order=4).propose([9], 1) == []
    four = NgramDraft(max_order=4)
    four.add([3, 4, 5, 6])
    assert four.propose([8, 8, 4, 5], 1) == [6]  # orders 4 and 3 unseen: order 2 (4,5) -> 6
    assert four.propose([8, 8, 8, 5], 1) == [6]  # order 1


def test_the_key_budget_stops_learning_exactly_when_reached():
    full = NgramDraft(max_order=2)
    full.add([1, 2, 3])
    size = len(full._counts)  # keys after one sequence: (1) (2) (1,2)
    at_budget = NgramDraft(max_order=2, max_keys=size)
    at_budget.add([1, 2, 3])
    at_budget.add([7, 8])
    assert at_budget.propose([7], 1) == []  # budget reached: not learned
    above = NgramDraft(max_order=2, max_keys=size + 1)
    above.add([1, 2, 3])
    above.add([7, 8])
    assert above.propose([7], 1) == [8]
    assert NgramDraft(max_keys=0).propose([], 1) == [] and len(NgramDraft(max_keys=0)) == 0
    empty = NgramDraft(max_keys=0)
    empty.add([1, 2, 3])
    assert len(empty) == 0


def test_a_copied_table_keeps_learning_and_clear_empties_it():
    draft = NgramDraft()
    draft.add([1, 2, 3])
    twin = copy.deepcopy(draft)
    twin.add([1, 5, 6])  # a copy gets a working lock of its own
    twin.add([1, 5, 6])
    assert twin.propose([1], 1) == [5] and draft.propose([1], 1) == [2]
    twin.clear()
    assert len(twin) == 0 and twin.propose([1], 2) == []
    twin.add([4, 9])
    assert twin.propose([4], 1) == [9]


def _tiny_decoder(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if model_type == "gpt2":
        sizes = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    elif model_type == "opt":
        sizes = dict(vocab_size=96, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
                     max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    elif model_type == "qwen3":
        sizes["head_dim"] = 8
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **sizes)).eval()


@pytest.mark.parametrize("model_type", sorted(SUPPORTED_MODEL_TYPES))
def test_every_supported_decoder_type_drafts_hf_greedy_text(model_type):
    """Each type the drafting path accepts gives HF greedy's tokens, with a draft table seeded so that
    drafts are partly wrong (rejections and different accepted lengths per row) and a padded prefix."""
    decoder = _tiny_decoder(model_type)
    assert supports_drafting(decoder)
    generator = torch.Generator().manual_seed(1)
    hidden = decoder.get_input_embeddings().weight.shape[1]
    embeds = torch.randn(3, 6, hidden, generator=generator)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 2:4] = 0  # row 1: two padding positions inside its prefix
    with torch.no_grad():
        want = [decoder.generate(inputs_embeds=embeds[i:i + 1, mask[i].bool()], attention_mask=torch.ones(1, int(mask[i].sum()),
                                 dtype=torch.long), max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=0)[0].tolist()
                for i in range(3)]
    table = NgramDraft()
    for i, ids in enumerate(want):
        table.add([5] + ids[: 4 + i] + [int(t) for t in torch.randint(3, 96, (6,), generator=generator)])  # right, then wrong
    got = drafted_greedy(decoder, embeds, table, [5], eos=2, pad=0, max_new_tokens=12, draft_tokens=4, attention_mask=mask)
    for ref, out in zip(want, got.token_ids):
        assert out == ref[: len(out)] and len(out) == len(ref)
    assert got.passes < 12  # some drafts were accepted


def test_an_unlisted_decoder_type_is_not_drafted():
    decoder = _tiny_decoder("llama")
    decoder.config.model_type = "falcon"
    assert not supports_drafting(decoder)
