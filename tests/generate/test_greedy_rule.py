"""Drafted decoding's greedy rule against HF's own logits processors, case by case.

`_GreedyRule.choose` re-implements what HF greedy search does to a row's logits (repetition
penalty, no-repeat n-grams, the min-new-tokens eos ban) so verification can skip copying the
vocabulary row. Written for survivors of a mutation run over speculative.py (docs/testing.md):
the tiny models of the end-to-end tests rarely put a repeated token or eos on top, so an
off-by-one in the eos ban or a wrong penalty for negative logits passed them.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor, NoRepeatNGramLogitsProcessor,
                          RepetitionPenaltyLogitsProcessor)

from radgen.models.speculative import _banned_ngram_tokens, _GreedyRule

EOS, VOCAB, PROMPT = 0, 12, [7, 8]


def _hf_choice(logits: torch.Tensor, tokens: list[int], penalty: float, ngram: int, min_new: int) -> int:
    """HF greedy's pick for the next token after `tokens` (the new ones), prompt PROMPT before them.
    As in radgen's decoding the prompt is embeddings, so the penalty and n-gram rules see new tokens only."""
    processors = LogitsProcessorList()
    if penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty))
    if ngram > 0:
        processors.append(NoRepeatNGramLogitsProcessor(ngram))
    if min_new > 0:
        processors.append(MinNewTokensLengthLogitsProcessor(0, min_new, EOS))
    ids = torch.tensor([tokens], dtype=torch.long) if tokens else torch.zeros(1, 0, dtype=torch.long)
    return int(processors(ids, logits[None].clone())[0].argmax())


def _cases(count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        length = int(torch.randint(0, 9, (1,), generator=generator))
        tokens = torch.randint(1, 5, (length,), generator=generator).tolist()  # few distinct tokens: repeats and n-grams
        logits = torch.randn(VOCAB, generator=generator) * 2
        if tokens and bool(torch.rand(1, generator=generator) < 0.6):
            logits[tokens[-1]] = logits.max() + float(torch.rand(1, generator=generator))  # a seen token on top, narrowly
        if bool(torch.rand(1, generator=generator) < 0.3):
            logits[EOS] = logits.max() + 0.5  # eos on top
        if bool(torch.rand(1, generator=generator) < 0.3):
            logits = -logits.abs() - 0.1  # every logit negative: the penalty multiplies
        yield logits, tokens


@pytest.mark.parametrize("penalty,ngram,min_new", [(1.0, 0, 0), (1.3, 0, 0), (1.0, 2, 0), (1.0, 3, 0), (1.0, 0, 4),
                                                   (1.5, 2, 3), (0.8, 0, 0)])
def test_the_greedy_rule_picks_what_hf_greedy_picks(penalty, ngram, min_new):
    rule = _GreedyRule(EOS, penalty, ngram, min_new)
    differs = 0
    for logits, tokens in _cases(400, seed=hash((penalty, ngram, min_new)) % 1000):
        want = _hf_choice(logits, tokens, penalty, ngram, min_new)
        assert rule.choose(logits, int(logits.argmax()), tokens) == want, (tokens, logits.tolist())
        differs += want != int(logits.argmax())
    if (penalty, ngram, min_new) != (1.0, 0, 0):
        assert differs > 10  # the cases do exercise the rule, not only the raw argmax


def test_eos_is_banned_for_exactly_min_new_tokens():
    rule = _GreedyRule(EOS, 1.0, 0, 3)
    logits = torch.tensor([5.0] + [0.0] * (VOCAB - 1))
    assert [rule.choose(logits, EOS, [1] * n) for n in range(5)] == [1, 1, 1, EOS, EOS]


def test_the_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    rule = _GreedyRule(EOS, 2.0, 0, 0)
    positive = torch.tensor([0.0, 3.0, 2.0] + [-9.0] * (VOCAB - 3))
    assert rule.choose(positive, 1, [1]) == 2  # 3 / 2 = 1.5 < 2
    negative = torch.tensor([-9.0, -1.0, -1.5] + [-9.0] * (VOCAB - 3))
    assert rule.choose(negative, 1, [1]) == 2  # -1 * 2 = -2 < -1.5
    assert rule.choose(negative, 1, []) == 1  # nothing seen yet: no penalty


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_banned_ngram_tokens_equal_hf_for_every_history_length(n):
    generator = torch.Generator().manual_seed(n)
    for length in range(0, 10):
        for _ in range(20):
            tokens = torch.randint(1, 4, (length,), generator=generator).tolist()
            ids = torch.tensor([tokens], dtype=torch.long) if tokens else torch.zeros(1, 0, dtype=torch.long)
            processed = NoRepeatNGramLogitsProcessor(n)(ids, torch.zeros(1, VOCAB))
            want = sorted(int(i) for i in torch.nonzero(processed[0] == -float("inf")).flatten())
            assert sorted(set(_banned_ngram_tokens(tokens, n))) == want, (tokens, n)
    assert _banned_ngram_tokens([1, 1, 1], 0) == [] and _banned_ngram_tokens([1, 1, 1], -1) == []


def test_suppressed_tokens_are_never_chosen_as_hf_suppress_tokens_does():
    from transformers import SuppressTokensLogitsProcessor

    suppressed = [5, 6]
    rule = _GreedyRule(EOS, 1.3, 2, 2, suppress_tokens=suppressed)
    processor = SuppressTokensLogitsProcessor(suppressed)
    picked_suppressed_raw = 0
    for logits, tokens in _cases(300, seed=11):
        logits[5] = logits.max() + 1.0 if len(tokens) % 2 else logits[5]  # a suppressed token on top half the time
        want = int(processor(torch.zeros(1, 1, dtype=torch.long), _hf_scores(logits, tokens, 1.3, 2, 2))[0].argmax())
        assert rule.choose(logits, int(logits.argmax()), tokens) == want
        assert not rule.allows(5, tokens) and not rule.allows(6, tokens)
        picked_suppressed_raw += int(logits.argmax()) in suppressed
    assert picked_suppressed_raw > 50


def _hf_scores(logits: torch.Tensor, tokens: list[int], penalty: float, ngram: int, min_new: int) -> torch.Tensor:
    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(penalty), NoRepeatNGramLogitsProcessor(ngram),
                                      MinNewTokensLengthLogitsProcessor(0, min_new, EOS)])
    ids = torch.tensor([tokens], dtype=torch.long) if tokens else torch.zeros(1, 0, dtype=torch.long)
    return processors(ids, logits[None].clone())
