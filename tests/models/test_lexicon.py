"""Known words (radgen.models.lexicon): the rule per token, and every decoding path keeping to it."""

from __future__ import annotations

import pytest
import torch

from radgen.models.fast import prepare_for_inference
from radgen.models.lexicon import KnownWordsProcessor, Lexicon, TokenLexicon
from radgen.models.memory import ReportMemory
from radgen.models.shortlist import ShortHead, score_picks
from radgen.models.speculative import NgramDraft, drafted_greedy
from tests.generate.fixtures import tiny_model

WORDS = "the heart is normal in size . lungs are clear no pleural effusion cardiomegaly cardiopulmonary disease"


@pytest.fixture(scope="module")
def model():
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    return model


@pytest.fixture(scope="module")
def rule(model):
    return TokenLexicon(Lexicon.from_texts([WORDS]), model.tokenizer, model.eos_id())


def ids(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def verdicts(rule, tokens: list[int]) -> list[bool]:
    return [rule.allows(tokens[i], tokens[:i]) for i in range(len(tokens))]


def test_known_words_pass_token_by_token_and_others_stop_where_they_leave_the_lexicon(model, rule):
    known = ids(model, " the heart is normal in size . cardiopulmonary disease")
    assert verdicts(rule, known) == [True] * len(known)  # including the lone-space token before "heart"
    assert rule.allows(model.eos_id(), known)
    # "cardio" + "p" + "ulmonary" is known; the same start with another ending is not
    odd = ids(model, " cardiopathy")
    assert verdicts(rule, odd)[0] and not all(verdicts(rule, odd))
    assert not any(verdicts(rule, ids(model, " fracture"))[:1])  # no known word starts "fracture"'s first piece


def test_a_new_word_or_the_end_waits_until_the_word_is_whole(model, rule):
    partial = ids(model, " cardio")  # the beginning of two known words, not a word itself
    assert rule.word_so_far(partial) == "cardio"
    assert not rule.allows(model.eos_id(), partial)
    assert not rule.allows(ids(model, " .")[0], partial)
    assert rule.allows(model.eos_id(), [])  # an empty report breaks no word
    space = ids(model, " heart")[0]  # this tokenizer spells " heart" as " " + "heart"
    assert rule.texts[space] == "" and rule.starts[space]
    # a space alone may be followed by a word or the end: forcing a continuation after it wrote worse
    # text with SmolLM2, whose digits follow a space token ("abnormality . 3 x x x")
    assert rule.allows(ids(model, " the")[0], ids(model, " the") + [space])
    assert rule.allows(model.eos_id(), ids(model, " the") + [space])


def test_the_mask_is_the_allows_check_over_the_whole_vocabulary(model, rule):
    for text in ["", " the", " cardio", " cardiop", " no pleural"]:
        history = ids(model, text) if text else []
        mask = rule.mask(history)
        expected = [rule.allows(token, history) for token in range(len(model.tokenizer))]
        assert mask[: len(expected)].tolist() == expected, text
        assert mask.any()  # a known beginning always has a way on


def test_drafted_greedy_and_hf_generate_write_only_known_words_and_the_same_text(model, rule):
    torch.manual_seed(1)
    size = model.encoder.image_size
    with torch.no_grad():
        visual = model.visual_tokens(torch.randn(3, 3, size, size))
        prefix = torch.tensor([model.prefix_ids()] * 3)
        embeds, mask, _ = model._causal_inputs(visual, model._embed(prefix), torch.ones_like(prefix))
        options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=24, draft_tokens=5)
        free = drafted_greedy(model.decoder, embeds, NgramDraft(), **options)
        known = drafted_greedy(model.decoder, embeds, NgramDraft(), lexicon=rule, **options)
        hf = model.decoder.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=24, do_sample=False, num_beams=1,
                                    eos_token_id=model.eos_id(), pad_token_id=0, logits_processor=[KnownWordsProcessor(rule)])
    words = set(WORDS.split())
    assert any(set(model.tokenizer.decode(t).split()) - words for t in free.token_ids)  # a random decoder's own words
    for row, tokens in enumerate(known.token_ids):
        assert set(model.tokenizer.decode(tokens).split()) <= words
        hf_row = hf[row].tolist()
        hf_row = hf_row[: hf_row.index(model.eos_id())] if model.eos_id() in hf_row else hf_row
        assert tokens == hf_row[: len(tokens)] and len(hf_row) <= len(tokens) + 1


def test_an_off_list_token_the_rule_forbids_is_no_miss():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 6, bias=False)
    short = ShortHead(torch.tensor([0, 1, 2]), head.weight[:3].detach(), None, 6)
    hidden = torch.randn(1, 4)
    logits = head(hidden)[0]
    pick = int(logits[:3].argmax())
    off = [t for t in (3, 4, 5) if logits[t] >= logits[pick]]
    if not off:  # make token 5 beat the pick
        with torch.no_grad():
            head.weight[5] = head.weight[pick] * 2 + 0.1 * hidden[0].sign()
        off = [5]
    _, missed = score_picks(head, short, [hidden], [[pick]], [[pick]])
    assert missed == [True]
    _, missed = score_picks(head, short, [hidden], [[pick]], [[pick]], allowed=lambda row, j, token: token not in off)
    assert missed == [False]


def test_generate_keeps_to_the_report_memorys_words_unless_told_not_to(model):
    model.report_memory = ReportMemory(["cough", "fever"], ["The heart is normal in size. Lungs are clear.",
                                                            "No pleural effusion. Cardiomegaly."], cleaning="r2gen-iu")
    try:
        pixels = torch.randn(2, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(4))
        words = {w for r in model.report_memory.reports for w in model.report_memory.cleaned(r).split()}
        for beams in (1, 2):
            kept = model.generate(pixel_values=pixels, num_beams=beams, max_new_tokens=16)
            assert all(set(r.text.split()) <= words for r in kept), [r.text for r in kept]
        free = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=16, known_words=False)
        assert any(set(r.text.split()) - words for r in free)
        assert model.known_words() is model.known_words()  # built once per memory
    finally:
        model.report_memory = None


def test_the_cli_and_the_settings_turn_the_rule_off():
    from radgen.cli import build_parser
    from radgen.config import load_recipe
    from radgen.generate.decode import GenerationSettings

    recipe = load_recipe("radgen-small", size="tiny")
    assert GenerationSettings.from_recipe(recipe).generate_kwargs()["known_words"] is True
    assert GenerationSettings.from_recipe(recipe, known_words=False).generate_kwargs()["known_words"] is False
    args = build_parser().parse_args(["generate", "--model", "m", "--data", "d.jsonl", "--out", "o.jsonl", "--any-words"])
    assert args.any_words is True


def test_every_token_the_rule_allows_is_possible_and_goes_on_the_shortlist(model, rule):
    space = ids(model, " heart")[0]
    for history in [[], ids(model, " the"), ids(model, " cardio"), ids(model, " no pleural"), ids(model, " the") + [space]]:
        assert set(rule.mask(history).nonzero().flatten().tolist()) <= rule.possible
    assert not rule.allows(ids(model, " fracture")[0], [])  # impossible anywhere: rejected before the word walk
    model.report_memory = ReportMemory(["cough"], ["The heart is normal in size."], cleaning="r2gen-iu")
    try:
        model.shortlist = type(model.shortlist)()
        lexicon = model.known_words()
        # a pick the rule moved off the decoder's choice could otherwise be beaten by an allowed token off the list
        assert lexicon.possible <= set(model.shortlist._tokens)
    finally:
        model.report_memory = None
