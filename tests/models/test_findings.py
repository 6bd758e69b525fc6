"""Grounding: the finding head, its targets, thresholds, prompts, and decoding with per-study prompts."""

import pytest
import torch

from radgen.config import FindingsConfig
from radgen.errors import ConfigError
from radgen.models import ReportGenerator
from radgen.models.findings import best_f1_thresholds, DEFAULT_OBSERVATIONS, FindingHead, names_from_targets, targets_from_labels, verbalize
from tests.models.conftest import pixels, tiny


def test_default_observations_are_the_13_abnormal_chexpert_ones():
    assert len(DEFAULT_OBSERVATIONS) == 13 and "No Finding" not in DEFAULT_OBSERVATIONS
    assert DEFAULT_OBSERVATIONS[1] == "Cardiomegaly" and DEFAULT_OBSERVATIONS[-1] == "Support Devices"


def test_targets_take_manifest_labels_uncertain_as_present_and_label_reports_without_them():
    observations = ["Cardiomegaly", "Edema", "Pleural Effusion"]
    labels = [{"Cardiomegaly": 1, "Edema": 0}, {"Edema": -1}, None, {}]
    reports = ["ignored when labels exist", "ignored too", "the heart is enlarged . no pleural effusion .", "ignored: labelled, nothing present . cardiomegaly ."]
    targets, from_report = targets_from_labels(labels, reports, observations)
    assert targets.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert from_report == 1
    assert names_from_targets(targets, observations) == [["Cardiomegaly"], ["Edema"], ["Cardiomegaly"], []]
    by_report, n = targets_from_labels(labels, ["no acute disease .", "mild pulmonary edema .", reports[2], "clear ."], observations, source="report")
    assert n == 4 and by_report.tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    with pytest.raises(ConfigError, match="label_source=auto"):
        targets_from_labels(labels, reports, observations, source="manifest")


def test_thresholds_maximise_f1_per_observation_and_stay_half_with_too_few_positives():
    head = FindingHead(4, ["A", "B"])
    # A: positives at 0.3 and 0.4, negatives at 0.1, 0.2, 0.35 -> counting 0.3 and up gives tp 2, fp 1
    # (F1 0.8); 0.4 and up gives tp 1, fp 0 (F1 0.667): 0.3 wins, and the threshold goes halfway in
    # logits to the next score down, 0.2: odds sqrt(3/7 * 1/4) = 0.32733, p = 0.32733 / 1.32733.
    # B: one positive only -> 0.5.
    probs = torch.tensor([[0.3, 0.9], [0.4, 0.1], [0.1, 0.2], [0.2, 0.2], [0.35, 0.3]])
    targets = torch.tensor([[1, 1], [1, 0], [0, 0], [0, 0], [0, 0]], dtype=torch.float32)
    assert head.set_thresholds(probs, targets, min_positives=2) == pytest.approx([0.24661, 0.5], abs=1e-5)
    assert head.thresholds.tolist() == pytest.approx([0.24661, 0.5], abs=1e-5)
    logits = torch.logit(torch.tensor([[0.25, 0.49], [0.24, 0.51]]))
    _, names = head.predict(logits)
    assert names == [["A"], ["B"]]


def test_threshold_sits_in_the_middle_of_the_gap_and_keeps_the_tuning_decisions():
    # separable: negatives up to 0.5, positives from 0.98 -> any threshold in (0.5, 0.98] is perfect;
    # the middle in logits is odds sqrt(1 * 49) = 7, p = 0.875 (the old rule took the edge, 0.98)
    probs = torch.tensor([[0.1], [0.5], [0.98], [0.99], [0.999]])
    targets = torch.tensor([[0], [0], [1], [1], [1]], dtype=torch.float32)
    assert best_f1_thresholds(probs, targets) == pytest.approx([0.875], abs=1e-6)
    assert best_f1_thresholds(probs, targets, placement="edge") == pytest.approx([0.98])
    with pytest.raises(ValueError, match="placement"):
        best_f1_thresholds(probs, targets, placement="centre")
    # scores one float32 step apart: no middle exists, the edge keeps the decisions exact
    top = torch.tensor(1.0)
    below = torch.nextafter(top, torch.tensor(0.0))
    probs = torch.stack([torch.tensor(0.2), below, top, top, top]).unsqueeze(1)
    (threshold,) = best_f1_thresholds(probs, targets)
    assert ((probs[:, 0] >= threshold) == targets[:, 0].bool()).all()
    # the lowest score is the best threshold (everything present): nothing below, the edge itself
    probs = torch.tensor([[0.6], [0.7], [0.8]])
    assert best_f1_thresholds(probs, torch.ones(3, 1)) == pytest.approx([0.6])


def test_class_balance_is_negatives_over_positives_capped():
    head = FindingHead(4, ["A", "B", "C"])
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.float32)
    head.set_class_balance(targets, max_pos_weight=2.5)
    assert head.pos_weight.tolist() == pytest.approx([1.0, 2.5, 2.5])  # A: 2/2; B: 3/1 capped; C: no positive -> cap


def test_verbalize_lists_findings_lowercase_or_says_none():
    cfg = FindingsConfig(enabled=True)
    assert verbalize(["Cardiomegaly", "Pleural Effusion"], cfg) == "Image findings: cardiomegaly, pleural effusion."
    assert verbalize([], cfg) == "Image findings: none."


def test_bad_findings_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="label_source"):
        tiny("radgen-small", "model.findings.label_source=chexbert")
    with pytest.raises(ConfigError, match="{findings}"):
        tiny("radgen-small", "model.findings.prompt_template=Findings seen")


def test_grounded_prompt_is_masked_from_the_loss_and_differs_per_study():
    model = tiny("radgen-small")
    assert model.grounded_prompt
    batch = model.tokenize_reports(["heart enlarged .", "clear ."], findings=[["Cardiomegaly", "Edema"], []])
    for row, findings in enumerate([["Cardiomegaly", "Edema"], []]):
        prefix = model.prefix_ids(findings)
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, : len(prefix)].tolist() == prefix
        assert (batch["labels"][row, : len(prefix)] == -100).all() and (batch["labels"][row, len(prefix): n] != -100).all()
    assert len(model.prefix_ids(["Cardiomegaly", "Edema"])) > len(model.prefix_ids([]))
    assert model.tokenizer.decode(model.prefix_ids(["Edema"]), skip_special_tokens=True).startswith("Image findings: edema.")


def test_forward_adds_the_weighted_head_loss_to_the_report_loss():
    model = tiny("radgen-small", "model.findings.loss_weight=0.5").train()
    batch = model.tokenize_reports(["heart enlarged .", "clear ."], findings=[["Cardiomegaly"], []])
    targets = torch.zeros(2, 13)
    targets[0, 1] = 1
    out = model(**batch, pixel_values=pixels(model), finding_targets=targets, loss_only=True)
    torch.testing.assert_close(out.loss, out.extras["report_loss"] + 0.5 * out.extras["finding_loss"])
    out.loss.backward()
    assert model.findings.mlp[0].weight.grad is not None and model.findings.mlp[0].weight.grad.abs().sum() > 0
    plain = model(**batch, pixel_values=pixels(model), loss_only=True)
    assert "finding_loss" not in plain.extras


@pytest.mark.parametrize("num_beams,draft_tokens", [(1, 8), (1, 0), (2, 0)])
def test_rows_with_different_prompts_decode_as_they_would_alone(num_beams, draft_tokens):
    """Batched decoding groups rows by prompt length; each row's report must equal decoding it alone."""
    model = tiny("radgen-small").eval()
    images = pixels(model, batch=3)
    findings = [["Cardiomegaly", "Pleural Effusion"], [], ["Edema"]]
    options = dict(num_beams=num_beams, max_new_tokens=6, draft_tokens=draft_tokens)
    together = model.generate(pixel_values=images, findings=findings, **options)
    for i in range(3):
        alone = model.generate(pixel_values=images[i:i + 1], findings=[findings[i]], **options)[0]
        assert together[i].token_ids == alone.token_ids
        torch.testing.assert_close(torch.tensor(together[i].token_logprobs), torch.tensor(alone.token_logprobs), atol=1e-4, rtol=1e-4)
        assert together[i].findings == findings[i]
        assert set(together[i].finding_probs) == set(DEFAULT_OBSERVATIONS)


def test_generate_uses_the_heads_thresholded_findings(tmp_path):
    model = tiny("radgen-small").eval()
    images = pixels(model, batch=2)
    probs, _ = model.predict_findings(pixel_values=images)
    # thresholds just below row 0's probabilities on Cardiomegaly and Edema and above everything else
    thresholds = torch.full((13,), 1.01)
    for k in (1, 4):
        thresholds[k] = float(probs[0, k]) - 1e-6
    model.findings.thresholds.copy_(thresholds)
    reports = model.generate(pixel_values=images[:1], num_beams=1, max_new_tokens=4)
    assert reports[0].findings == ["Cardiomegaly", "Edema"]
    assert reports[0].finding_probs["Cardiomegaly"] == pytest.approx(float(probs[0, 1]), abs=1e-4)
    # the thresholds are weights: they survive save/load
    model.save_pretrained(tmp_path / "m")
    loaded = ReportGenerator.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.findings.thresholds, model.findings.thresholds)
    assert loaded.generate(pixel_values=images[:1], num_beams=1, max_new_tokens=4)[0].token_ids == reports[0].token_ids


def test_a_recipe_without_the_head_keeps_its_plain_prompt():
    model = tiny("clipcap-prefix")
    assert not hasattr(model, "findings") and not model.grounded_prompt
    assert model.prompt_text(["Cardiomegaly"]) == model.recipe.model.decoder.prompt
    with pytest.raises(ConfigError, match="no finding head"):
        model.predict_findings(pixel_values=pixels(model, 1))
    reports = model.generate(pixel_values=pixels(model, 1), num_beams=1, max_new_tokens=3)
    assert reports[0].finding_probs is None and reports[0].findings is None
