"""radgen.models.shortlist: drafted picks over the listed tokens' head rows give the whole head's
greedy text and log-probabilities; rows a token off the list could have changed are decoded again."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from radgen.models import shortlist as shortlist_module
from radgen.models import speculative
from radgen.models.fast import PackedLinear, prepare_for_inference, token_logprobs
from radgen.models.shortlist import ShortHead, Shortlist, score_picks
from radgen.models.speculative import NgramDraft, drafted_greedy
from tests.generate.fixtures import tiny_model


def _pixels(model, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    size = model.encoder.image_size
    return torch.randn(batch, 3, size, size, generator=generator)


def _head(vocabulary=40, hidden=8, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(hidden, vocabulary, bias=False)


def test_the_list_is_used_once_it_is_long_enough_and_stands_aside_while_rows_miss(monkeypatch):
    monkeypatch.setattr(shortlist_module, "MIN_TOKENS", 4)
    listed = Shortlist()
    listed.add([1, 2, 3])
    assert not listed.usable()
    listed.add([3, 4])
    assert len(listed) == 4 and listed.usable()
    listed.record(rows=4, misses=2)  # half the rows decoded twice: stand aside
    assert listed.miss_rate > shortlist_module.MAX_MISS_RATE and not listed.usable()
    for _ in range(200):  # skipped decodes age the misses: it is tried again
        if listed.usable():
            break
        listed.skipped()
    assert listed.usable()
    listed.record(rows=100, misses=0)
    assert listed.miss_rate < 0.01


def test_head_rows_are_kept_until_the_list_grows_and_packed_heads_give_the_same_rows():
    head = _head()
    listed = Shortlist()
    listed.add([5, 1, 9])
    rows = listed.head(head)
    assert rows.ids.tolist() == [1, 5, 9] and torch.equal(rows.weight, head.weight[[1, 5, 9]])
    assert listed.head(head) is rows  # cached
    listed.add([2, 9])
    grown = listed.head(head)
    assert grown is not rows and grown.ids.tolist() == [1, 2, 5, 9]
    packed = PackedLinear(head)
    assert torch.equal(listed.head(packed).weight, grown.weight)
    listed.add(range(40, 60))  # ids past the head's rows are left out
    assert listed.head(head).ids.tolist() == [1, 2, 5, 9]


def test_a_packed_heads_rows_come_from_the_matrix_it_was_tied_to_once_checked_equal(monkeypatch):
    unpacked = []
    plain_weight = PackedLinear.weight.fget
    monkeypatch.setattr(PackedLinear, "weight", property(lambda self: unpacked.append(1) or plain_weight(self)))
    head = _head()
    embedding = nn.Embedding(40, 8)
    embedding.weight = head.weight  # tied, as SmolLM2's head and input embedding are
    packed = PackedLinear(head)
    listed = Shortlist()
    listed.add([5, 1, 9])
    rows = listed.head(packed, embedding.weight)
    assert torch.equal(rows.weight, head.weight[[1, 5, 9]]) and len(unpacked) == 1  # unpacked once, to check
    for grow in ([2], [3, 30]):
        listed.add(grow)
        assert torch.equal(listed.head(packed, embedding.weight).weight, head.weight[sorted(listed._tokens)])
    assert len(unpacked) == 1  # the list grew twice; the rows came from the tied matrix
    # a matrix that is not the head's (an untied embedding): the head's own rows, every time
    other = Shortlist()
    other.add([1, 2])
    untied = torch.randn(40, 8)
    assert torch.equal(other.head(packed, untied).weight, head.weight[[1, 2]])
    other.add([3])
    assert torch.equal(other.head(packed, untied).weight, head.weight[[1, 2, 3]])
    assert len(unpacked) == 3  # the check's unpacking gave the first rows; the second growth unpacked the head again
    assert pickle.loads(pickle.dumps(listed))._same_as_head is None  # a copy checks again


def test_no_rows_where_the_list_covers_most_of_the_head_or_the_head_has_no_weight_matrix():
    listed = Shortlist()
    listed.add(range(30))
    assert listed.head(_head(vocabulary=40)) is None

    class Quantized(nn.Module):  # torch's dynamic int8 Linear: weight is a method
        def weight(self):
            return None

    listed = Shortlist()
    listed.add([1])
    assert listed.head(Quantized()) is None


def test_copies_keep_the_tokens_and_drop_the_cached_rows():
    listed = Shortlist()
    listed.add([1, 2])
    listed.head(_head())
    for copied in (copy.deepcopy(listed), pickle.loads(pickle.dumps(listed))):
        assert len(copied) == 2 and copied._cache is None
        copied.add([3])  # its own lock works
        assert len(copied) == 3 and len(listed) == 2


@pytest.mark.parametrize("packed", [None, 1, 16, 64])
def test_listed_logits_are_the_heads(packed):
    # a packed head: the same oneDNN kernel in the head's layout sums each logit in the same order, so to
    # the bit and near-ties fall the same way. A plain head's BLAS promises no such thing across column
    # counts: MKL's AVX2 kernels (an AVX2-only Intel CPU, or MKL_ENABLE_INSTRUCTIONS=AVX2) summed this
    # shape's 40-row products in another order for 572 columns than for 4,000 (8 ulps apart), so the
    # same values to fp32 rounding there, as the decoder body's kernels give between pass shapes
    torch.manual_seed(3)
    head = nn.Linear(64, 4000, bias=False)
    head = PackedLinear(head, rows_hint=packed) if packed else head
    listed = Shortlist()
    listed.add(range(0, 4000, 7))
    rows = listed.head(head)
    assert packed is None or rows._packed.rows_hint == packed
    for positions in (2, 12, 40):
        hidden = torch.randn(positions, 64)
        with torch.no_grad():
            if packed:
                assert torch.equal(rows.logits(hidden), head(hidden)[:, rows.ids])
            else:
                torch.testing.assert_close(rows.logits(hidden), head(hidden)[:, rows.ids], rtol=1e-5, atol=1e-4)


def test_spread_logits_are_minus_infinity_off_the_list():
    head = _head()
    short = Shortlist()
    short.add([3, 7])
    rows = short.head(head)
    hidden = torch.randn(2, 8)
    spread = rows.spread(rows.logits(hidden))
    assert spread.shape == (2, 40)
    assert torch.allclose(spread[:, [3, 7]], head(hidden)[:, [3, 7]], atol=1e-6)
    assert torch.isinf(spread[:, [0, 4, 39]]).all()


def test_a_walked_column_reads_the_list_as_its_spread_over_the_vocabulary_would():
    """The accept walk takes each column's top token, a row's logits and single values from the
    listed logits alone (speculative._Column); the same answers as spreading them over the
    vocabulary first, ties included (the first maximum in vocabulary order)."""
    short = Shortlist()
    short.add([30, 3, 17, 7])  # added out of order: the rows are kept in vocabulary order
    rows = short.head(_head())
    listed = torch.tensor([[1.0, 2.0, 2.0, 0.5],   # tokens 3, 7, 17, 30: 7 and 17 tie at the top
                           [4.0, -1.0, 0.0, 4.0],  # 3 and 30 tie
                           [-2.0, -3.0, -1.0, -5.0]])
    spread = rows.spread(listed)
    column = speculative._Column(listed, rows)
    assert column.top() == spread.max(-1).indices.tolist() == [7, 3, 17]
    for k in range(3):
        assert torch.equal(column.row(k), spread[k])
        for token in (3, 7, 17, 30, 0, 39):  # listed and off the list (-inf)
            assert column.value(k, token) == float(spread[k, token])
    whole = torch.randn(2, 40)
    plain = speculative._Column(whole)
    assert plain.top() == whole.max(-1).indices.tolist() and plain.value(1, 5) == float(whole[1, 5])


def test_score_picks_gives_whole_vocabulary_logprobs_and_flags_off_list_winners():
    head = _head()
    hidden = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = head(hidden)
    top = logits.argmax(-1).tolist()
    others = [t for t in range(40) if t not in top]
    listed = ShortHead(torch.tensor(sorted(set(top))), head.weight[sorted(set(top))], None, 40)
    picks = [top[:3], top[3:]]
    values, missed = score_picks(head, listed, [hidden[:3], hidden[3:]], picks, picks)
    expected = token_logprobs(logits, torch.tensor(top)).tolist()
    assert values[0] + values[1] == pytest.approx(expected, abs=1e-6)
    assert missed == [False, False]  # every pick is the whole head's argmax
    # a list without row 1's argmax: its picks were made without the winner
    off = ShortHead(torch.tensor(others[:5]), head.weight[others[:5]], None, 40)
    second = [int(logits[3:].argsort(descending=True)[j, 1]) for j in range(2)]
    _, missed = score_picks(head, off, [hidden[:3], hidden[3:]], picks, [top[:3], second])
    assert missed == [True, True]
    # a guide's pick is scored as picked; the check compares with the processors' choice
    values, missed = score_picks(head, listed, [hidden[:1]], [[others[0]]], [[top[0]]])
    assert values[0] == pytest.approx([float(logits[0].detach().log_softmax(-1)[others[0]])], abs=1e-6) and missed == [False]


def _decode(model, seed, shortlist, rows=3, **settings):
    """Drafted decoding of `rows` random prompts (embeddings): an untrained tiny decoder writes a
    different text after each, which it would not after its weak visual tokens."""
    embeddings = model.decoder.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(rows, 6, embeddings.shape[1], generator=generator) * embeddings.std() * 3
    options = dict(prefix_ids=[], eos=model.eos_id(), pad=0, max_new_tokens=16, draft_tokens=6, no_repeat_ngram_size=2)
    return drafted_greedy(model.decoder, embeds, NgramDraft(), shortlist=shortlist, keep_prefill=True, **{**options, **settings})


@pytest.fixture()
def spied(monkeypatch):
    """Counts of the shortlist's scoring calls and of the rows decoded again."""
    calls = {"scored": 0, "again": 0}
    score, again = speculative.score_picks, speculative._decode_again

    def counted_score(*args, **kwargs):
        calls["scored"] += 1
        return score(*args, **kwargs)

    def counted_again(out, rows, *args, **kwargs):
        calls["again"] += len(rows)
        return again(out, rows, *args, **kwargs)

    monkeypatch.setattr(speculative, "score_picks", counted_score)
    monkeypatch.setattr(speculative, "_decode_again", counted_again)
    monkeypatch.setattr(shortlist_module, "MIN_TOKENS", 1)
    return calls


@pytest.mark.parametrize("recipe", ["radgen-small", "blip2-opt-lora"])
def test_a_list_holding_the_reports_words_gives_the_whole_heads_text_and_logprobs(recipe, spied):
    model = tiny_model(recipe)
    prepare_for_inference(model, "float32")
    reference = _decode(model, 2, None)
    assert len({tuple(row) for row in reference.token_ids}) == 3
    listed = Shortlist()
    listed.add({t for row in reference.token_ids for t in row})
    short = _decode(model, 2, listed)
    assert spied == {"scored": 1, "again": 0}
    assert short.token_ids == reference.token_ids
    for got, want in zip(short.logprobs, reference.logprobs):
        assert got == pytest.approx(want, abs=1e-5)
    assert torch.allclose(short.prefill.last_logits, reference.prefill.last_logits, atol=1e-5)  # whole-vocabulary logits


def test_rows_whose_winner_is_off_the_list_are_decoded_again_to_the_same_text(spied):
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    reference = _decode(model, 2, None)
    others = set(reference.token_ids[0] + reference.token_ids[2])
    assert set(reference.token_ids[1]) - others  # row 1 writes a token the others do not
    listed = Shortlist()
    listed.add(others)  # rows 0 and 2 find their words on the list, row 1 does not
    short = _decode(model, 2, listed)
    assert spied["again"] == 1 and short.token_ids == reference.token_ids
    for got, want in zip(short.logprobs, reference.logprobs):
        assert got == pytest.approx(want, abs=1e-5)
    for got, want in zip(short.prefill.decoded, reference.prefill.decoded):  # the re-scoring caches stay usable
        assert got.prefix_length == want.prefix_length
        assert torch.allclose(got.keys[0], want.keys[0], atol=1e-5)
    assert listed.miss_rate > 0


def test_no_list_with_a_repetition_penalty(spied):
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    listed = Shortlist()
    listed.add(range(5))
    _decode(model, 2, listed, repetition_penalty=1.3)
    assert spied["scored"] == 0


def test_generate_puts_the_report_memorys_words_on_the_list_once(monkeypatch):
    from radgen.models.memory import ReportMemory

    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    model.report_memory = ReportMemory(["cough", "fever"], ["Heart size normal.", "Small left effusion."], ["s1", "s2"])
    model.generate(pixel_values=_pixels(model, 1, seed=3), num_beams=1, max_new_tokens=4)
    words = set(model._text_ids("Small left effusion."))
    assert words <= set(model.shortlist._tokens)
    calls = []
    monkeypatch.setattr(model, "tokenizer", _Counting(model.tokenizer, calls))
    model.generate(pixel_values=_pixels(model, 1, seed=3), num_beams=1, max_new_tokens=4)
    assert not any(isinstance(texts, list) and len(texts) == 2 for texts in calls)  # not tokenized again


class _Counting:
    """A tokenizer that records what it is asked to tokenize."""

    def __init__(self, tokenizer, calls):
        self._tokenizer, self._calls = tokenizer, calls

    def __call__(self, texts, *args, **kwargs):
        self._calls.append(texts)
        return self._tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)
