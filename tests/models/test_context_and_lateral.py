"""The study's indication in the prompt (model.context) and the lateral view in the finding head
(model.findings.lateral): what the decoder and the head receive, with and without them."""

import pytest
import torch

from radgen.data.text import clean_context
from radgen.errors import ConfigError
from radgen.models.findings import FindingHead
from tests.models.conftest import pixels, tiny


@pytest.mark.parametrize("raw,expected", [
    ("XXXX-year-old male, chest pain.", "year-old male, chest pain"),  # IU placeholder dropped, case folded
    ("Positive PPD; history of TB___", "positive ppd history of tb"),  # MIMIC placeholder, odd characters
    ("SYNCOPE", "syncope"),
    ("  ", ""),
    (None, ""),
    ("one two three four five six seven eight nine ten eleven twelve thirteen", "one two three four five six seven eight nine ten eleven twelve"),
])
def test_clean_context_is_short_plain_text(raw, expected):
    assert clean_context(raw, max_words=12) == expected


def test_the_indication_leads_the_prompt_and_is_masked_from_the_loss():
    model = tiny("radgen-small", "model.context.section=indication")
    assert model.prompt_text(["Edema"], "Chest pain.") == "Indication: chest pain. Image findings: edema. Findings:"
    assert model.prompt_text(["Edema"], "") == model.prompt_text(["Edema"]) == "Image findings: edema. Findings:"
    contexts = ["XXXX-year-old with dyspnea", ""]
    batch = model.tokenize_reports(["heart enlarged .", "clear ."], findings=[["Cardiomegaly"], []], contexts=contexts)
    for row, (findings, context) in enumerate(zip([["Cardiomegaly"], []], contexts)):
        prefix = model.prefix_ids(findings, context)
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, : len(prefix)].tolist() == prefix
        assert (batch["labels"][row, : len(prefix)] == -100).all() and (batch["labels"][row, len(prefix): n] != -100).all()
    assert len(model.prefix_ids([], contexts[0])) > len(model.prefix_ids([], contexts[1]))


def test_a_recipe_without_context_ignores_it():
    model = tiny("radgen-small", "model.context.section=null")
    assert model.prompt_text([], "chest pain") == model.prompt_text([])


@pytest.mark.parametrize("draft_tokens,num_beams", [(8, 1), (0, 1), (0, 3)])
def test_rows_with_different_indications_decode_as_they_would_alone(draft_tokens, num_beams):
    # drafted greedy, HF greedy and beam search each decode the padded batch in one call
    model = tiny("radgen-small", "model.context.section=indication").eval()
    images = pixels(model, batch=3)
    contexts = ["chest pain", None, "pre-op evaluation for knee surgery"]
    options = dict(num_beams=num_beams, max_new_tokens=5, draft_tokens=draft_tokens, findings=[[], [], []])
    together = model.generate(pixel_values=images, contexts=contexts, **options)
    for i in range(3):
        alone = model.generate(pixel_values=images[i:i + 1], contexts=[contexts[i]], **{**options, "findings": [[]]})[0]
        assert together[i].token_ids == alone.token_ids
    with pytest.raises(ValueError, match="contexts: 1 texts for 3 images"):
        model.generate(pixel_values=images, contexts=["x"], **options)


def test_lateral_head_pools_both_views_and_a_missing_lateral_is_a_hidden_one():
    torch.manual_seed(0)
    head = FindingHead(4, ["A", "B"], hidden_size=8, lateral=True).eval()
    frontal, lateral = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    pooled = head.pool(frontal, lateral, torch.tensor([True, False, True]))
    assert pooled.shape == (3, 2 * 4 + 2 * 4 + 1)
    assert pooled[:, -1].tolist() == [1.0, 0.0, 1.0] and (pooled[1, 8:16] == 0).all()
    assert torch.equal(pooled[:, :8], torch.cat([frontal.mean(1), frontal.amax(1)], -1))
    logits = head.classify(pooled)
    # row 1 (no lateral) answers as if no lateral was given at all; rows 0 and 2 depend on theirs
    torch.testing.assert_close(logits[1], head(frontal[1:2])[0])
    other = head.pool(frontal, lateral.flip(0), torch.tensor([True, False, True]))
    assert not torch.allclose(head.classify(other)[0], logits[0])
    torch.testing.assert_close(head.classify(other)[1], logits[1])
    # hiding a lateral (training augmentation) gives exactly the missing-lateral answer
    hidden = head.hide_lateral(pooled, share=1.0)
    torch.testing.assert_close(head.classify(hidden), head(frontal))
    assert torch.equal(head.hide_lateral(pooled, share=0.0), pooled)


def test_the_model_feeds_the_lateral_view_to_a_lateral_head_only():
    model = tiny("radgen-small", "model.findings.lateral=true").eval()
    images = pixels(model, batch=2)
    lateral = torch.flip(images, dims=(0,))
    with_lateral, _ = model.predict_findings(pixel_values=images, lateral_pixel_values=lateral)
    frontal_only, _ = model.predict_findings(pixel_values=images)
    masked, _ = model.predict_findings(pixel_values=images, lateral_pixel_values=lateral, lateral_mask=torch.tensor([False, True]))
    assert not torch.allclose(with_lateral, frontal_only)
    torch.testing.assert_close(masked[0], frontal_only[0])
    torch.testing.assert_close(masked[1], with_lateral[1])
    report = model.generate(pixel_values=images, lateral_pixel_values=lateral, num_beams=1, max_new_tokens=3)[0]
    assert report.finding_probs["Cardiomegaly"] == pytest.approx(float(with_lateral[0, 1]), abs=1e-4)
    plain = tiny("radgen-small", "model.findings.lateral=false").eval()
    assert plain.findings.lateral is False
    torch.testing.assert_close(plain.predict_findings(pixel_values=images, lateral_pixel_values=lateral)[0],
                               plain.predict_findings(pixel_values=images)[0])


def test_bad_lateral_dropout_is_a_clear_error():
    with pytest.raises(ConfigError, match="lateral_dropout"):
        tiny("radgen-small", "model.findings.lateral_dropout=1.5")
