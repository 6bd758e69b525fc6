"""Retrieval-guided greedy: the decoder keeps a stored report's token only within the guide margin."""

from __future__ import annotations

import logging

import pytest
import torch

from radgen.generate.decode import prediction_row
from radgen.models.fast import prepare_for_inference
from radgen.models.memory import ReportMemory
from radgen.models.speculative import NgramDraft, drafted_greedy
from tests.generate.fixtures import tiny_model


def _setup(batch: int = 2, seed: int = 3):
    model = tiny_model("radgen-small")
    prepare_for_inference(model, "float32")
    generator = torch.Generator().manual_seed(seed)
    size = model.encoder.image_size
    with torch.no_grad():
        visual = model.visual_tokens(torch.randn(batch, 3, size, size, generator=generator))
    prefix = torch.tensor([model.prefix_ids()] * batch)
    embeds, _, _ = model._causal_inputs(visual, model._embed(prefix), torch.ones_like(prefix))
    return model, embeds


def _guide(model, tokens: list[int]) -> NgramDraft:
    table = NgramDraft()
    table.add(model.prefix_ids() + tokens + [model.eos_id()])
    return table


def _teacher_forced_logits(model, embeds, row: int, tokens: list[int]) -> torch.Tensor:
    """(len(tokens), vocabulary) logits before each token, from one pass over prefix + tokens."""
    ids = torch.tensor([tokens])
    with torch.no_grad():
        full = torch.cat([embeds[row:row + 1], model._embed(ids)], dim=1)
        logits = model.decoder(inputs_embeds=full).logits[0].float()
    start = embeds.shape[1] - 1
    return logits[start:start + len(tokens)]


def test_a_zero_margin_or_no_guide_gives_the_greedy_text():
    model, embeds = _setup()
    options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=16, draft_tokens=6)
    plain = drafted_greedy(model.decoder, embeds, NgramDraft(), **options)
    guides = [_guide(model, [plain.token_ids[0][0], 40, 41, 42, 43, 44, 45]), None]  # starts where the decoder does
    assert drafted_greedy(model.decoder, embeds, NgramDraft(), guides=guides, guide_margin=0.0, **options).token_ids == plain.token_ids
    mixed = drafted_greedy(model.decoder, embeds, NgramDraft(), guides=guides, guide_margin=1e9, **options)
    assert mixed.token_ids[1] == plain.token_ids[1]  # the row without a guide decodes greedily
    assert mixed.token_ids[0] != plain.token_ids[0]


def test_an_unbounded_margin_writes_the_guide_after_the_first_token():
    model, embeds = _setup(batch=1)
    options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=20, draft_tokens=4)
    first = drafted_greedy(model.decoder, embeds, NgramDraft(), **options).token_ids[0][0]
    guide = [first, 50, 51, 52, 53, 54, 55, 56]  # the guide starts with the decoder's own first token
    out = drafted_greedy(model.decoder, embeds, NgramDraft(), guides=[_guide(model, guide)], guide_margin=1e9, **options)
    assert out.token_ids[0] == guide + [model.eos_id()]


@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_every_kept_token_is_within_the_margin_of_the_decoders_choice(margin):
    model, embeds = _setup(batch=2, seed=5)
    options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=24, draft_tokens=5)
    plain = drafted_greedy(model.decoder, embeds, NgramDraft(), **options).token_ids
    # guides: each row's greedy text with every third token replaced, so the guide disagrees often
    guides = [_guide(model, [t if k % 3 else (t + 7) % 100 for k, t in enumerate(ids)]) for ids in plain]
    out = drafted_greedy(model.decoder, embeds, NgramDraft(), guides=guides, guide_margin=margin, **options)
    for row, tokens in enumerate(out.token_ids):
        logits = _teacher_forced_logits(model, embeds, row, tokens)
        chosen = logits[torch.arange(len(tokens)), torch.tensor(tokens)]
        assert torch.all(chosen >= logits.max(-1).values - margin - 1e-4)
        expected = logits.log_softmax(-1)[torch.arange(len(tokens)), torch.tensor(tokens)]
        assert out.logprobs[row] == pytest.approx(expected.tolist(), abs=1e-4)  # log p of the tokens actually kept


def test_the_guide_never_ends_a_report_before_min_new_tokens_nor_repeats_a_banned_ngram():
    model, embeds = _setup(batch=1)
    eos = model.eos_id()
    options = dict(prefix_ids=model.prefix_ids(), eos=eos, pad=0, max_new_tokens=20, draft_tokens=4)
    first = drafted_greedy(model.decoder, embeds, NgramDraft(), **options).token_ids[0][0]
    short = [first, 60, 61]
    out = drafted_greedy(model.decoder, embeds, NgramDraft(), guides=[_guide(model, short)], guide_margin=1e9,
                         min_new_tokens=8, **options)
    assert eos not in out.token_ids[0][:8]
    looping = [first, 70, 71, 70, 71, 70, 71]  # with no_repeat_ngram_size 2, "70 71" may appear once
    out = drafted_greedy(model.decoder, embeds, NgramDraft(), guides=[_guide(model, looping)], guide_margin=1e9,
                         no_repeat_ngram_size=2, **options)
    pairs = list(zip(out.token_ids[0], out.token_ids[0][1:]))
    assert len(pairs) == len(set(pairs))


def test_the_model_guides_each_study_by_its_indications_nearest_stored_report(tmp_path):
    model = tiny_model("radgen-small")
    model.report_memory = ReportMemory(["chest pain", "shortness of breath"],
                                       ["the heart is normal .", "there is a small left pleural effusion ."], ["t1", "t2"])
    prepare_for_inference(model, "float32")
    pixels = torch.randn(2, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(1))
    options = dict(num_beams=1, max_new_tokens=30, consistent_findings=False)
    plain = model.generate(pixel_values=pixels, contexts=["breath", "pain"], **options)
    guided = model.generate(pixel_values=pixels, contexts=["breath", "pain"], guide_margin=1e9, **options)
    assert [r.guide for r in guided] == ["there is a small left pleural effusion .", "the heart is normal ."]
    for report, source in zip(guided, ["there is a small left pleural effusion .", "the heart is normal ."]):
        wanted = model._text_ids(source)
        # the first token is the decoder's own; from where it meets the guide, the guide's tokens follow
        assert report.token_ids[-len(wanted[1:]) - 1:-1] == wanted[1:] or report.token_ids[1:len(wanted)] == wanted[1:]
    assert all(r.guide is None for r in plain)
    row = prediction_row(model, "s1", guided[0], "findings")
    assert row["guide_report"] == guided[0].guide and row["guide_study_id"] == "t2"
    assert "guide_report" not in prediction_row(model, "s1", plain[0], "findings")


def test_beam_search_ignores_the_guide_and_a_model_without_memory_says_so_once(caplog):
    model = tiny_model("radgen-small")
    pixels = torch.randn(1, 3, model.encoder.image_size, model.encoder.image_size)
    with caplog.at_level(logging.WARNING, logger="radgen.models.generator"):
        first = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6, guide_margin=2.0)
        model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6, guide_margin=2.0)
    assert sum("no report memory" in r.getMessage() for r in caplog.records) == 1
    assert first[0].token_ids == model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6)[0].token_ids
    model.report_memory = ReportMemory(["pain"], ["the heart is normal ."])
    beams = model.generate(pixel_values=pixels, num_beams=2, max_new_tokens=6, guide_margin=2.0)
    assert beams[0].guide is None


def test_the_guided_text_does_not_depend_on_the_draft_table_or_width():
    model, embeds = _setup(batch=2, seed=7)
    options = dict(prefix_ids=model.prefix_ids(), eos=model.eos_id(), pad=0, max_new_tokens=24)
    plain = drafted_greedy(model.decoder, embeds, NgramDraft(), draft_tokens=4, **options).token_ids
    guides = [_guide(model, [t if k % 4 else (t + 11) % 100 for k, t in enumerate(ids)]) for ids in plain]
    warm = NgramDraft()
    for ids in plain:
        warm.add(model.prefix_ids() + ids)
    outputs = [drafted_greedy(model.decoder, embeds, table, draft_tokens=width, guides=guides, guide_margin=1.0, **options).token_ids
               for table in (NgramDraft(), warm) for width in (1, 3, 16)]
    assert outputs[0] != plain  # the guide changed the text
    assert all(out == outputs[0] for out in outputs)


def test_a_negative_margin_is_a_config_error_and_the_cli_passes_the_margin_on(monkeypatch):
    from radgen.config import load_recipe
    from radgen.errors import ConfigError
    from radgen.generate import cli as generate_cli
    from radgen.generate.decode import GenerationSettings

    recipe = load_recipe("radgen-small", size="tiny")
    with pytest.raises(ConfigError, match="--guide-margin must be >= 0"):
        GenerationSettings.from_recipe(recipe, guide_margin=-1.0)
    assert GenerationSettings.from_recipe(recipe, guide_margin=3.5).generate_kwargs()["guide_margin"] == 3.5
    for pool in (0, 2.5):
        with pytest.raises(ConfigError, match="--guide-pool must be an integer >= 1"):
            GenerationSettings.from_recipe(recipe, guide_pool=pool)
    assert GenerationSettings.from_recipe(recipe, guide_pool=7).generate_kwargs()["guide_pool"] == 7
    assert load_recipe("radgen-small").generate.guide_margin == 0.0  # a recipe's model has no memory yet (radgen-small.yaml)
    import argparse

    parser = argparse.ArgumentParser()
    generate_cli.register(parser.add_subparsers())
    assert parser.parse_args(["generate", "scans/", "--out", "p.jsonl", "--guide-margin", "0"]).guide_margin == 0.0
    assert parser.parse_args(["generate", "scans/", "--out", "p.jsonl", "--guide-pool", "9"]).guide_pool == 9


def test_a_guide_pool_hands_each_study_the_consensus_of_its_nearest_reports():
    model = tiny_model("radgen-small")
    model.report_memory = ReportMemory(["chest pain", "chest pain", "chest pain", "cough"],
                                       ["a large left effusion and a pacemaker .", "the heart is normal .",
                                        "the heart is normal . no effusion .", "edema ."], ["p1", "p2", "p3", "c1"])
    pixels = torch.randn(1, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(2))
    options = dict(num_beams=1, max_new_tokens=8, consistent_findings=False, contexts=["pain"], guide_margin=2.0)
    assert model.generate(pixel_values=pixels, **options)[0].guide_study_id == "p1"  # pool 1: the nearest (first of the tie)
    # p3 shares "the heart is normal" with p2 and "effusion" with p1: the report most like the other two
    assert model.generate(pixel_values=pixels, guide_pool=3, **options)[0].guide_study_id == "p3"


def test_a_study_whose_guide_has_nothing_to_lend_decodes_unguided():
    model = tiny_model("radgen-small")
    pixels = torch.randn(1, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(3))
    # known_words off: the memory also brings its words (radgen.models.lexicon), and this is about the guide alone
    options = dict(num_beams=1, max_new_tokens=8, consistent_findings=False, contexts=["pain"], known_words=False)
    plain = model.generate(pixel_values=pixels, **options)[0]
    model.report_memory = ReportMemory(["pain"], ["stable calcified granuloma ."], ["s1"])
    guided = model.generate(pixel_values=pixels, guide_margin=1e9, **options)[0]
    assert guided.guide == "" and guided.guide_study_id == "s1" and guided.token_ids == plain.token_ids
