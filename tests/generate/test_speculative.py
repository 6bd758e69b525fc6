"""Drafted greedy decoding gives HF greedy's tokens and log-probabilities, in fewer decoder passes."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from radgen.models import speculative
from radgen.models.fast import prepare_for_inference
from radgen.models.speculative import NgramDraft, _banned_ngram_tokens, drafted_greedy, supports_drafting
from tests.generate.fixtures import tiny_model


def test_draft_follows_the_most_frequent_continuation_of_the_longest_suffix():
    draft = NgramDraft(max_order=3)
    draft.add([1, 2, 3, 4])
    draft.add([1, 2, 3, 4])
    draft.add([9, 2, 3, 7])
    assert draft.propose([1, 2, 3], 1) == [4]  # order 3 (1,2,3) -> 4
    assert draft.propose([9, 2, 3], 1) == [7]  # order 3 wins over the more frequent order-2 (2,3) -> 4
    assert draft.propose([5, 2, 3], 3) == [4]  # (2,3) -> 4 twice vs 7 once; nothing follows 4
    assert draft.propose([8], 4) == []  # unseen
    assert draft.propose([1], 0) == []


def test_draft_stops_learning_at_its_key_budget_and_survives_copy_and_pickle():
    draft = NgramDraft(max_order=2, max_keys=3)
    draft.add([1, 2, 3, 4, 5])
    size = len(draft)
    draft.add([6, 7, 8])
    assert len(draft) == size  # budget reached: the second sequence is not learned
    assert copy.deepcopy(draft).propose([1], 2) == draft.propose([1], 2)
    assert pickle.loads(pickle.dumps(draft)).propose([1], 2) == [2, 3]


def test_banned_ngram_tokens_match_hf_processor():
    from transformers import NoRepeatNGramLogitsProcessor

    tokens = [5, 6, 7, 5, 6, 8, 5, 6]
    scores = torch.zeros(1, 10)
    processed = NoRepeatNGramLogitsProcessor(3)(torch.tensor([tokens]), scores.clone())
    expected = sorted(int(i) for i in torch.nonzero(processed[0] == -float("inf")).flatten())
    assert sorted(set(_banned_ngram_tokens(tokens, 3))) == expected == [7, 8]


def _pixels(model, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    size = model.encoder.image_size
    return torch.randn(batch, 3, size, size, generator=generator)


@pytest.mark.parametrize("recipe", ["radgen-small", "clipcap-prefix", "blip2-opt-lora"])
@pytest.mark.parametrize("settings", [{}, {"no_repeat_ngram_size": 3}, {"repetition_penalty": 1.3, "min_new_tokens": 12},
                                      {"max_new_tokens": 5}])
@pytest.mark.parametrize("head", ["where-read", "whole-pass", "full-logits"])
def test_drafted_greedy_equals_hf_greedy(recipe, settings, head, monkeypatch):
    # where-read: the LM head runs only on the positions the accept walk reads (these decoders' logits
    # are lm_head(hidden)), what wide passes do; whole-pass: on every position of the pass at once, what
    # passes of few positions do; full-logits: the decoder's own logits, the path other decoders take
    if head == "full-logits":
        monkeypatch.setattr(speculative, "lm_body_and_head", lambda decoder: None)
    monkeypatch.setattr(speculative, "EAGER_HEAD_POSITIONS", 0 if head == "where-read" else 10_000)
    model = tiny_model(recipe)
    prepare_for_inference(model, "float32")
    assert supports_drafting(model.decoder)
    kwargs = {"num_beams": 1, "max_new_tokens": 24, **settings}
    pixels = _pixels(model, 3, seed=1)
    reference = model.generate(pixel_values=pixels, draft_tokens=0, **kwargs)
    assert len(model.report_draft) == 0  # the HF path does not feed the draft table
    cold = model.generate(pixel_values=pixels, draft_tokens=6, **kwargs)  # empty table: nothing to draft
    warm = model.generate(pixel_values=pixels, draft_tokens=6, **kwargs)  # the table now holds these reports
    single = model.generate(pixel_values=pixels[1:2], draft_tokens=6, **kwargs)
    for got in (cold, warm, [reference[0], single[0], reference[2]]):
        for ref, out in zip(reference, got):
            assert out.token_ids == ref.token_ids
            assert out.text == ref.text
            assert out.token_logprobs == pytest.approx(ref.token_logprobs, abs=1e-4)


def test_drafting_saves_decoder_passes_when_the_table_knows_the_report():
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    pixels = _pixels(model, 2, seed=3)
    visual = model.visual_tokens(pixels)
    prefix = torch.tensor([model.prefix_ids()] * 2)
    embeds, _, _ = model._causal_inputs(visual, model._embed(prefix), torch.ones_like(prefix))
    args = (model.decoder, embeds)
    options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=20)
    cold = drafted_greedy(*args, NgramDraft(), draft_tokens=8, **options)
    assert cold.passes == max(len(t) for t in cold.token_ids) - 1  # one token a pass, as plain greedy
    table = NgramDraft()
    for ids in cold.token_ids:
        table.add(model.prefix_ids() + ids)
    warm = drafted_greedy(*args, table, draft_tokens=8, **options)
    assert warm.token_ids == cold.token_ids
    assert warm.passes <= -(-max(len(t) for t in cold.token_ids) // 9) + 1  # up to 8 drafted + 1 per pass
    assert warm.passes < cold.passes


def test_the_prefill_carries_the_first_draft():
    # a table that knows the whole report drafts it after the prompt: the prefill pass verifies it all
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    visual = model.visual_tokens(_pixels(model, 2, seed=6))
    prefix = torch.tensor([model.prefix_ids()] * 2)
    embeds, _, _ = model._causal_inputs(visual, model._embed(prefix), torch.ones_like(prefix))
    options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=12)
    cold = drafted_greedy(model.decoder, embeds[:1], NgramDraft(), draft_tokens=16, **options)
    table = NgramDraft()
    table.add(model.prefix_ids() + cold.token_ids[0])
    warm = drafted_greedy(model.decoder, embeds[:1], table, draft_tokens=16, **options)
    assert warm.token_ids == cold.token_ids and warm.passes == 0 < cold.passes
    assert warm.logprobs[0] == pytest.approx(cold.logprobs[0], abs=1e-5)
    # in a batch the other row is drafted this report too, kept where it agrees and masked out where not:
    # it writes what it writes alone
    both = drafted_greedy(model.decoder, embeds, table, draft_tokens=16, **options)
    alone = drafted_greedy(model.decoder, embeds[1:], NgramDraft(), draft_tokens=16, **options)
    assert both.token_ids == cold.token_ids + alone.token_ids


def test_beam_search_and_unsupported_decoders_take_the_hf_path():
    model = tiny_model("blip-captioning")
    assert not supports_drafting(model.decoder)
    pixels = _pixels(model, 2, seed=4)
    assert [r.token_ids for r in model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=8)] == \
        [r.token_ids for r in model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=8, draft_tokens=0)]
    small = tiny_model("radgen-small")
    small.generate(pixel_values=_pixels(small, 2, seed=4), num_beams=2, max_new_tokens=8)
    assert len(small.report_draft) == 0


def test_add_draft_reports_seeds_the_table_with_tokenized_reports():
    model = tiny_model("radgen-small")
    size = model.add_draft_reports(["No pleural effusion.", "Heart size is normal."])
    assert size > 0
    ids = model.tokenizer(" No pleural", add_special_tokens=False)["input_ids"] if model.recipe.model.decoder.prompt else \
        model.tokenizer("No pleural", add_special_tokens=False)["input_ids"]
    proposal = model.report_draft.propose(model.prefix_ids() + ids, 3)
    assert model.tokenizer.decode(proposal).strip().startswith("effusion")


def test_drafting_with_lora_left_unmerged_equals_hf_greedy():
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32", merge=False)  # `radgen generate --no-merge-lora`: a PeftModel decoder
    assert hasattr(model.decoder, "get_base_model") and supports_drafting(model.decoder)
    pixels = _pixels(model, 3, seed=5)
    reference = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=16, draft_tokens=0)
    for _ in range(2):  # cold table, then a table that knows these reports
        got = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=16, draft_tokens=8)
        assert [r.token_ids for r in got] == [r.token_ids for r in reference]


def test_bf16_logits_are_processed_and_scored_in_fp32_and_left_untouched():
    from transformers import RepetitionPenaltyLogitsProcessor

    from radgen.models.fast import token_logprobs
    from radgen.models.speculative import _GreedyRule

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)).bfloat16()
    reference = logits.float().log_softmax(-1)
    assert token_logprobs(logits, torch.tensor([5, 7, 3])).tolist() == pytest.approx([float(reference[0, 5]), float(reference[1, 7]), float(reference[2, 3])], abs=1e-6)
    row = logits[0]
    before = row.clone()
    seen = [int(row.argmax()), int(row.argmin())]
    got = _GreedyRule(eos=1, repetition_penalty=1.3, no_repeat_ngram_size=0, min_new_tokens=0).choose(row, seen[0], seen)
    assert torch.equal(row, before)  # the pass's logits still hold the raw values the log-probabilities need
    expected = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([seen]), row.float()[None].clone()).argmax(-1)
    assert got == int(expected)


def test_on_cpu_the_rows_of_a_large_batch_share_a_pass_budget_of_drafted_tokens():
    from radgen.models.speculative import CPU_PASS_TOKENS, draft_width

    cpu = torch.device("cpu")
    assert draft_width(1, 16, cpu) == 16  # batch 1: the pass is weight-read-bound, draft all
    assert draft_width(32, 16, cpu) == CPU_PASS_TOKENS // 32 - 1 == 4
    assert draft_width(1000, 16, cpu) == 1  # never below one
    assert draft_width(32, 0, cpu) == 0 and draft_width(32, 16, torch.device("cuda")) == 16
    # drafted_greedy asks the table for that many tokens a row, and fewer rows get more
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    asked = []

    class Spy(NgramDraft):
        def propose(self, context, k):
            asked.append(k)
            return super().propose(context, k)

    rows = 20
    visual = model.visual_tokens(_pixels(model, rows, seed=4))
    prefix = torch.tensor([model.prefix_ids()] * rows)
    embeds, _, _ = model._causal_inputs(visual, model._embed(prefix), torch.ones_like(prefix))
    drafted_greedy(model.decoder, embeds, Spy(), prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0,
                   max_new_tokens=40, draft_tokens=16)
    assert max(asked) == CPU_PASS_TOKENS // rows - 1 == 7


def test_suppressed_tokens_are_skipped_exactly_as_hf_generate_skips_them():
    # special tokens other than eos (ReportGenerator.suppressed_tokens): both paths pass them on
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    pixels = _pixels(model, 2, seed=9)
    plain = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=12, draft_tokens=0)
    # suppress the two commonest tokens of the plain text: the reports must change, identically on both paths
    counts = {}
    for report in plain:
        for token in report.token_ids:
            counts[token] = counts.get(token, 0) + 1
    common = sorted(counts, key=counts.get, reverse=True)[:2]
    model.suppressed_tokens = lambda: common
    hf = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=12, draft_tokens=0)
    drafted = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=12, draft_tokens=4)
    assert [r.token_ids for r in hf] == [r.token_ids for r in drafted]
    assert [r.token_ids for r in hf] != [r.token_ids for r in plain]
    assert not any(t in common for r in hf for t in r.token_ids)


def test_a_report_never_contains_a_special_token_other_than_eos():
    model = tiny_model("radgen-small")
    eos = model.eos_id()
    assert eos not in model.suppressed_tokens()
    assert set(model.suppressed_tokens()) == set(model.tokenizer.all_special_ids) - {eos}
