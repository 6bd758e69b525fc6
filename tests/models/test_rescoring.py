"""radgen.models.rescoring: texts scored on the caches drafted decoding leaves (the prefill's, each
row's after decoding) equal a teacher-forced pass over prompt and text."""

from __future__ import annotations

import pytest
import torch

from radgen.models import rescoring, speculative
from radgen.models.fast import prepare_for_inference
from radgen.models.speculative import NgramDraft, drafted_greedy
from tests.generate.fixtures import tiny_model


def _pixels(model, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    size = model.encoder.image_size
    return torch.randn(batch, 3, size, size, generator=generator)


def test_common_prefix_length():
    assert rescoring.common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert rescoring.common_prefix_length([], [1]) == 0 and rescoring.common_prefix_length([7, 8], [7, 8]) == 2


def _decoded(recipe, extra_prompts, seed, monkeypatch, head_where_read, wrong_drafts_after=None, **settings):
    """A tiny model's drafted decoding of prompts of different lengths (left-padded), prefill kept;
    with head_where_read False, decoders without a plain LM head (full logits) are imitated. With
    `wrong_drafts_after` = i, the draft table proposes tokens after prompt i that the decoder rejects."""
    if not head_where_read:
        monkeypatch.setattr(speculative, "lm_body_and_head", lambda decoder: None)
        monkeypatch.setattr(rescoring, "lm_body_and_head", lambda decoder: None)
    model = tiny_model(recipe)
    prepare_for_inference(model, "float32")
    eos = model.eos_id()
    prompts = [model.prefix_ids() + extra for extra in extra_prompts]
    width = max(len(p) for p in prompts)
    prefix = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        visual = model.connector(model.image_features(_pixels(model, len(prompts), seed=seed)))
        embeds, full_mask, n_before = model._causal_inputs(visual, model._embed(prefix), mask)
    draft = NgramDraft()
    if wrong_drafts_after is not None:  # rejected positions leave holes in the cache
        draft.add(prompts[wrong_drafts_after] + [7] * 8)
    out = drafted_greedy(model.decoder, embeds, draft, prompts, eos, eos, attention_mask=full_mask, keep_prefill=True, **settings)
    return model, prompts, visual, n_before, out


def _teacher_forced(model, visual, prompt, text, n_before) -> list[float]:
    """log p of each token of `text` after `prompt` and the visual tokens, in one plain forward pass."""
    ids = torch.tensor([prompt + text])
    with torch.no_grad():
        alone, _, _ = model._causal_inputs(visual[None], model._embed(ids), torch.ones_like(ids))
        logp = model.decoder(inputs_embeds=alone).logits.float().log_softmax(-1)[0]
    start = n_before + len(prompt)
    return [float(logp[start + j - 1, t]) for j, t in enumerate(text)]


@pytest.mark.parametrize("recipe", ["radgen-small", "clipcap-prefix", "blip2-opt-lora"])
@pytest.mark.parametrize("head_where_read", [True, False])
@pytest.mark.parametrize("drafted_prefill", [False, True])
def test_continuations_scored_on_the_prefill_cache_equal_a_teacher_forced_pass(recipe, head_where_read, drafted_prefill, monkeypatch):
    # drafted_prefill: the table drafts after both prompts, so the prefill pass carries drafts that
    # the kept prefill cache must not
    model, prompts, visual, n_before, out = _decoded(recipe, [[], [11, 12, 13]], 3, monkeypatch, head_where_read,
                                                     wrong_drafts_after=1 if drafted_prefill else None,
                                                     max_new_tokens=5, draft_tokens=2)
    assert out.prefill.cache.get_seq_length() == out.prefill.mask.shape[1] == n_before + len(prompts[1])
    eos = model.eos_id()
    texts = {0: [21, 5, 9, 30, 4, 17], 1: [8, 40]}
    got = rescoring.score_continuations(model.decoder, out.prefill, [1, 0], [texts[1], texts[0]], pad=eos)  # rows in any order
    for row, values in zip([1, 0], got):
        assert values == pytest.approx(_teacher_forced(model, visual[row], prompts[row], texts[row], n_before), abs=2e-5)
    with pytest.raises(RuntimeError, match="already been used"):
        rescoring.score_continuations(model.decoder, out.prefill, [0], [texts[0]], pad=eos)


@pytest.mark.parametrize("recipe", ["radgen-small", "clipcap-prefix", "blip2-opt-lora"])
@pytest.mark.parametrize("head_where_read", [True, False])
def test_tails_scored_on_each_rows_decoding_cache_equal_a_teacher_forced_pass(recipe, head_where_read, monkeypatch):
    model, prompts, visual, n_before, out = _decoded(recipe, [[], [11, 12, 13], [14]], 5, monkeypatch, head_where_read,
                                                     wrong_drafts_after=1, max_new_tokens=9, draft_tokens=3, min_new_tokens=6)
    eos = model.eos_id()
    for row, tokens in enumerate(out.token_ids):  # prefix's real positions + every token but the last
        kept = out.prefill.decoded[row]
        assert kept.prefix_length == n_before + len(prompts[row]) and kept.keys[0].shape[1] == kept.prefix_length + len(tokens) - 1
    same = [1, 4, 5]  # keep 1, 4, 5 decoded tokens, then text the decoder never wrote
    texts = [out.token_ids[row][:n] + [21, 5, 9, 30][: row + 2] for row, n in enumerate(same)]
    got = rescoring.score_tails(model.decoder, [out.prefill.decoded[r] for r in (2, 0, 1)], [same[r] for r in (2, 0, 1)],
                                [texts[r] for r in (2, 0, 1)], pad=eos)  # rows in any order
    for row, values in zip((2, 0, 1), got):
        expected = _teacher_forced(model, visual[row], prompts[row], texts[row], n_before)
        assert values == pytest.approx(expected[same[row]:], abs=2e-5)
        # the kept tokens' decoded log-probabilities are the same pass's values
        assert out.logprobs[row][: same[row]] == pytest.approx(expected[: same[row]], abs=2e-5)
    with pytest.raises(ValueError, match="actually decoded"):
        rescoring.score_tails(model.decoder, [out.prefill.decoded[0]], [0], [texts[0]], pad=eos)
