"""Drafted greedy decoding when drafts are wrong: seeded bad drafts, rows that accept different counts.

The tiny recipe models write one token over and over, so their drafts are nearly always right and a
bug in the rejection path (accepting a wrong token, masking one cache position too many or too few)
goes unseen. Here the decoders are small HF causal LMs initialised with a large weight scale
(initializer_range 0.5): their greedy text depends on every earlier token and differs per batch row.
The reference is HF `generate` with do_sample=False on the same inputs.
"""

from __future__ import annotations

import random

import pytest
import torch

from radgen.models.speculative import NgramDraft, drafted_greedy

VOCAB, WIDTH, PREFIX = 48, 64, 5


def _decoder(kind: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, initializer_range=0.5, max_position_embeddings=512)
        return LlamaForCausalLM(config).eval()
    if kind == "gpt2":  # learned absolute positions: a wrong position id changes the text
        config = GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=2, n_head=4, n_positions=512, initializer_range=0.5)
        return GPT2LMHeadModel(config).eval()
    config = OPTConfig(vocab_size=VOCAB, hidden_size=WIDTH, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                       word_embed_proj_dim=WIDTH, max_position_embeddings=512, init_std=0.5)
    return OPTForCausalLM(config).eval()


def _prefix(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, PREFIX, WIDTH, generator=torch.Generator().manual_seed(seed))


def _hf_greedy(decoder, embeds, max_new_tokens, eos, pad, **settings):
    """HF greedy tokens per row (cut after eos) and the log-probability of each under the raw logits."""
    out = decoder.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), do_sample=False,
                           num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                           output_logits=True, return_dict_in_generate=True, **settings)
    logprobs = torch.stack(out.logits, 1).float().log_softmax(-1)
    tokens, scores = [], []
    for row, ids in enumerate(out.sequences.tolist()):
        if eos in ids:
            ids = ids[: ids.index(eos) + 1]
        tokens.append(ids)
        scores.append([float(logprobs[row, i, t]) for i, t in enumerate(ids)])
    return tokens, scores


class SeededWrongDraft:
    """Proposes the reference continuation, broken at a seeded position by a wrong token.

    A context that several rows share (the empty start) gets the first row's continuation, which is
    wrong for the others. Records, per decoder pass, how many proposed tokens were right.
    """

    def __init__(self, prefix_ids, references, seed):
        self.prefix, self.seed = list(prefix_ids), seed
        self.truth: dict[tuple[int, ...], list[int]] = {}
        for ref in references:
            for t in range(len(ref)):
                self.truth.setdefault(tuple(self.prefix + ref[:t]), ref[t:])
        self.passes = 0
        self.right: list[tuple[int, int, int]] = []  # (pass, tokens proposed, leading tokens right)

    def propose(self, context, k):
        truth = self.truth.get(tuple(context), [])[:k]
        rng = random.Random(f"{self.seed}:{list(context)}")
        cut = rng.randint(0, len(truth))  # len(truth): the whole proposal is right
        proposal = truth[:cut]
        if cut < len(truth):
            proposal.append((truth[cut] + 1 + rng.randrange(VOCAB - 1)) % VOCAB)  # never the right token
            proposal += [rng.randrange(VOCAB) for _ in range(rng.randint(0, k - len(proposal)))]
        self.right.append((self.passes, len(proposal), cut))
        return proposal


def _count_passes(decoder, draft):
    def hook(*_):
        draft.passes += 1
    return decoder.register_forward_pre_hook(hook)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "opt"])
@pytest.mark.parametrize("settings", [{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}])
def test_seeded_wrong_drafts_give_hf_greedy(kind, settings):
    decoder = _decoder(kind)
    embeds = _prefix(4, seed=kind.__len__())
    max_new = 28
    reference, ref_logprobs = _hf_greedy(decoder, embeds, max_new, eos=VOCAB + 1, pad=0, **settings)  # eos never written
    # the text is varied: rows differ and each uses many tokens, so a wrong token or position shows
    assert len({tuple(r) for r in reference}) == 4
    assert all(len(set(r)) >= 8 for r in reference)
    prefix_ids = [3, 7]
    draft = SeededWrongDraft(prefix_ids, reference, seed=11)
    handle = _count_passes(decoder, draft)
    try:
        got = drafted_greedy(decoder, embeds, draft, prefix_ids, eos=VOCAB + 1, pad=0, max_new_tokens=max_new, draft_tokens=6,
                             **settings)
    finally:
        handle.remove()
    assert got.token_ids == reference
    for mine, theirs in zip(got.logprobs, ref_logprobs):
        assert mine == pytest.approx(theirs, abs=1e-4)
    # the run saw what it is meant to test: rejected drafts, and rows of one pass keeping different counts
    rejected = [(p, n, right) for p, n, right in draft.right if right < n]
    assert len(rejected) >= 10 and any(right == 0 for _, _, right in rejected) and any(right > 0 for _, _, right in rejected)
    by_pass: dict[int, set[int]] = {}
    for p, _, right in draft.right:
        by_pass.setdefault(p, set()).add(right)
    assert any(len(counts) >= 3 for counts in by_pass.values())
    assert got.passes < max_new  # and some drafts were accepted


def test_rows_that_stop_at_different_steps_with_wrong_drafts():
    decoder = _decoder("llama")
    embeds = _prefix(5, seed=21)
    free, _ = _hf_greedy(decoder, embeds, 24, eos=VOCAB + 1, pad=0)
    # an eos that HF greedy writes mid-report in some rows and never in others: rows leave the batch at different passes
    counts = {token: sum(token in row[4:] and token not in row[:4] for row in free) for token in range(VOCAB)}
    eos = max(counts, key=counts.get)
    reference, ref_logprobs = _hf_greedy(decoder, embeds, 24, eos=eos, pad=0, min_new_tokens=4)
    lengths = {len(r) for r in reference}
    assert len(lengths) >= 2 and any(r[-1] == eos for r in reference)
    draft = SeededWrongDraft([1], reference, seed=5)
    got = drafted_greedy(decoder, embeds, draft, [1], eos=eos, pad=0, max_new_tokens=24, draft_tokens=5, min_new_tokens=4)
    assert got.token_ids == reference
    for mine, theirs in zip(got.logprobs, ref_logprobs):
        assert mine == pytest.approx(theirs, abs=1e-4)


def test_ngram_table_from_other_reports_drafts_partly_wrong_text():
    # the realistic case: the table holds reports of other studies, right for a few tokens, then wrong
    decoder = _decoder("llama")
    others, _ = _hf_greedy(decoder, _prefix(6, seed=31), 30, eos=VOCAB + 1, pad=0)
    table = NgramDraft(max_order=2)
    for ids in others:
        table.add([2] + ids)
    embeds = _prefix(3, seed=32)
    reference, _ = _hf_greedy(decoder, embeds, 30, eos=VOCAB + 1, pad=0)
    got = drafted_greedy(decoder, embeds, table, [2], eos=VOCAB + 1, pad=0, max_new_tokens=30, draft_tokens=8)
    assert got.token_ids == reference
    first = [(table.propose([2] + ref[:t], 1), ref[t]) for ref in reference for t in range(len(ref))]
    assert sum(bool(p) and p[0] != want for p, want in first) >= 5  # drafts that had to be rejected
