"""Findings-consistent reports: fragments dropped, named findings stated, denials of them dropped,
statements of findings the head covers but did not name dropped, the rest untouched."""

import pytest
import torch

from radgen.labels.labeler import label_report
from radgen.labels.templates import NORMAL, TEMPLATES
from radgen.models import report_decoding as decoding_module
from radgen.models.generator import GeneratedReport
from radgen.models import rescoring as rescoring_module
from radgen.models import speculative as speculative_module
from radgen.models.consistency import LUNG_FINDINGS, is_fragment, make_consistent
from tests.models.conftest import pixels, tiny


def test_a_denied_named_finding_is_replaced_by_its_sentence():
    text = "the heart size is normal . the lungs are clear . no pleural effusion or pneumothorax ."
    edited, edits = make_consistent(text, ["Cardiomegaly"])
    assert edited == "the heart is enlarged . the lungs are clear . no pleural effusion or pneumothorax ."
    assert len(edits) == 2 and "denies Cardiomegaly" in edits[0] and "added" in edits[1]
    assert label_report(edited)["Cardiomegaly"] == 1 and label_report(edited)["Pleural Effusion"] == 0  # unnamed: as written


def test_a_finding_already_stated_is_left_alone_and_nothing_named_changes_nothing():
    text = "mild cardiomegaly . small left pleural effusion ."
    assert make_consistent(text, ["Cardiomegaly", "Pleural Effusion"]) == (text, [])
    assert make_consistent(text, []) == (text, [])
    # uncertain counts as stated
    assert make_consistent("possible small pleural effusion .", ["Pleural Effusion"])[1] == []


HEAD = ["Cardiomegaly", "Pleural Effusion", "Support Devices", "Edema"]


def test_a_finding_the_head_covers_but_did_not_name_is_dropped():
    text = "the heart is normal in size . a right chest wall pacemaker is in place . the lungs are clear ."
    edited, edits = make_consistent(text, [], HEAD)
    assert edited == "the heart is normal in size . the lungs are clear ."
    assert edits == ["dropped 'a right chest wall pacemaker is in place .' (states Support Devices, which the image head did not find)"]
    assert label_report(edited).get("Support Devices") not in (1, -1)
    # without the head's list (or for an observation outside it) the statement stays as written
    assert make_consistent(text, []) == (text, [])
    assert make_consistent(text, [], ["Cardiomegaly"]) == (text, [])
    # uncertain counts as stated
    edited, _ = make_consistent("possible small left pleural effusion . the lungs are clear .", ["Cardiomegaly"], HEAD)
    assert edited == "the lungs are clear . the heart is enlarged ."  # the dropped sentence was not on the heart: at the end


def test_denials_of_unnamed_findings_and_sentences_outside_the_head_stay():
    text = "no pleural effusion or pneumothorax . degenerative changes of the thoracic spine ."
    assert make_consistent(text, [], HEAD) == (text, [])


def test_a_sentence_stating_a_named_and_an_unnamed_finding_goes_and_the_named_one_comes_back():
    edited, edits = make_consistent("cardiomegaly with small bilateral pleural effusions . the lungs are clear .", ["Cardiomegaly"], HEAD)
    assert edited == "the heart is enlarged . the lungs are clear ."
    assert "states Pleural Effusion" in edits[0] and edits[1] == "added 'the heart is enlarged .' (Cardiomegaly)"


def test_a_named_finding_no_sentence_spoke_of_is_added_at_the_end_so_the_report_keeps_its_start():
    text = "the heart is normal in size . the lungs are clear . no pneumothorax ."
    edited, edits = make_consistent(text, ["Pleural Effusion", "Support Devices"], HEAD)
    assert edited == text + " " + TEMPLATES["Pleural Effusion"] + " " + TEMPLATES["Support Devices"]
    assert edits == [f"added '{TEMPLATES['Pleural Effusion']}' (Pleural Effusion)", f"added '{TEMPLATES['Support Devices']}' (Support Devices)"]
    # a denial in the middle is replaced where it stood; the other finding still goes at the end
    edited, _ = make_consistent("the lungs are clear . no pleural effusion . no pneumothorax .", ["Pleural Effusion", "Cardiomegaly"], HEAD)
    assert edited == f"the lungs are clear . {TEMPLATES['Pleural Effusion']} no pneumothorax . {TEMPLATES['Cardiomegaly']}"


def test_a_report_with_nothing_left_becomes_the_normal_report():
    edited, edits = make_consistent("small left pleural effusion .", [], HEAD)
    assert edited == NORMAL and edits[-1] == f"added '{NORMAL}' (no sentence was left)"
    assert all(label_report(edited).get(name) not in (1, -1) for name in HEAD)
    assert make_consistent("", [], HEAD) == ("", [])


def test_every_named_finding_ends_up_stated():
    for name in TEMPLATES:
        edited, _ = make_consistent("the heart is normal in size . the lungs are clear . no acute disease .", [name])
        assert label_report(edited)[name] in (1, -1), (name, edited)


@pytest.mark.parametrize("path", ["prefill-cache", "prefill-cache-full-logits", "label-positions", "full-logits"])
def test_generate_edits_and_rescores_with_the_models_own_logprobs(path, monkeypatch):
    # prefill-cache (the default, drafted decoding): the edited texts are scored on the KV cache of
    # their prompts' prefill (rescoring.score_continuations), LM head on the text's positions only,
    # or on full logits for decoders without a plain LM head; with HF decoding (draft_tokens=0): one
    # teacher-forced pass over visual tokens, prompt and text, projecting the text's positions only
    # (fast.label_position_logprobs) or every position (decoders without a plain LM head)
    draft_tokens = 4 if path.startswith("prefill") else 0
    if path.endswith("full-logits"):
        monkeypatch.setattr(speculative_module, "lm_body_and_head", lambda decoder: None)
        monkeypatch.setattr(rescoring_module, "lm_body_and_head", lambda decoder: None)
        monkeypatch.setattr(decoding_module, "supports_label_position_loss", lambda decoder: False)
    calls = []
    score = decoding_module.score_continuations
    monkeypatch.setattr(decoding_module, "score_continuations", lambda *a, **k: calls.append(1) or score(*a, **k))
    model = tiny("radgen-small").eval()
    images = pixels(model, batch=3)
    named = [["Edema"], [], ["Cardiomegaly", "Pleural Effusion"]]  # prompts of different lengths: one left-padded batch
    kwargs = dict(pixel_values=images, num_beams=1, max_new_tokens=6, findings=named, draft_tokens=draft_tokens)
    plain = model.generate(**kwargs, consistent_findings=False)
    edited = model.generate(**kwargs)
    assert bool(calls) == path.startswith("prefill")
    assert edited[1].text == plain[1].text and edited[1].edits is None  # nothing named: untouched
    for i in (0, 2):
        assert edited[i].edits and all(label_report(edited[i].text)[name] == 1 for name in named[i])
        # the returned tokens are the edited text's, scored by the model under the same prompt
        assert model.tokenizer.decode(edited[i].token_ids, skip_special_tokens=True).strip() == edited[i].text
        batch = model.tokenize_reports([edited[i].text], findings=[named[i]])
        with torch.no_grad():
            logits = model(**batch, pixel_values=images[i:i + 1]).logits.float().log_softmax(-1)
        n = len(model.prefix_ids(named[i]))
        offset = model.num_visual_tokens
        expected = [float(logits[0, offset + n + j - 1, t]) for j, t in enumerate(edited[i].token_ids)]
        # tight: on this tiny model's near-uniform attention, text positions off by one move these by ~2e-4
        torch.testing.assert_close(torch.tensor(edited[i].token_logprobs), torch.tensor(expected), atol=2e-5, rtol=2e-6)


def test_clear_lungs_become_otherwise_clear_beside_a_named_lung_finding_only():
    text = "the heart is normal in size . the lungs are clear . no pleural effusion ."
    for name in LUNG_FINDINGS:
        edited, edits = make_consistent(text, [name])
        assert "the lungs are otherwise clear ." in edited and "the lungs are clear" not in edited, name
        assert any("reworded" in e for e in edits) and label_report(edited)[name] in (1, -1)
    edited, edits = make_consistent(text, ["Cardiomegaly"])  # not a lung finding: the lungs may be clear
    assert "the lungs are clear ." in edited and not any("reworded" in e for e in edits)
    edited, _ = make_consistent(text, ["Edema"], lung_wording=False)
    assert "the lungs are clear ." in edited
    assert make_consistent("the lungs are clear .", []) == ("the lungs are clear .", [])  # nothing named: untouched


def test_rows_sharing_one_prompt_length_are_rescored_on_their_prefill_too(monkeypatch):
    # equal prompts decode as one group (no left padding): the group's prefill serves its rows
    calls = []
    score = decoding_module.score_continuations
    monkeypatch.setattr(decoding_module, "score_continuations", lambda *a, **k: calls.append(a[2]) or score(*a, **k))
    model = tiny("radgen-small").eval()
    images = pixels(model, batch=2)
    named = [["Edema"], ["Edema"]]
    edited = model.generate(pixel_values=images, num_beams=1, max_new_tokens=6, findings=named, draft_tokens=4)
    assert calls == [[0, 1]] and all(report.edits for report in edited)
    batch = model.tokenize_reports([r.text for r in edited], findings=named)
    with torch.no_grad():
        logits = model(**batch, pixel_values=images).logits.float().log_softmax(-1)
    start = model.num_visual_tokens + len(model.prefix_ids(["Edema"]))
    for i, report in enumerate(edited):
        expected = [float(logits[i, start + j - 1, t]) for j, t in enumerate(report.token_ids)]
        torch.testing.assert_close(torch.tensor(report.token_logprobs), torch.tensor(expected), atol=2e-5, rtol=2e-6)


def test_fragments_are_dropped_before_the_finding_rules():
    text = "the lungs are clear . . . 200 x 240 x . no xxxx xxxx . the xxxx are unremarkable . no acute disease . the heart is"
    edited, edits = make_consistent(text, [], HEAD)
    assert edited == "the lungs are clear . the xxxx are unremarkable . no acute disease ."
    assert len(edits) == 5 and all(e.startswith("dropped fragment") for e in edits)
    assert make_consistent(text, [], HEAD, drop_fragments=False) == (text, [])
    # a cleanup, not a rewrite: a report of fragments alone (a random model's, or one cut at 2 tokens) stays as written
    assert make_consistent(". . 12 x 14 .", [], HEAD) == (". . 12 x 14 .", [])
    assert make_consistent("the heart", [], HEAD) == ("the heart", [])
    edited, _ = make_consistent("no xxxx xxxx . the heart is not enlarged . the lungs are", ["Cardiomegaly"], HEAD)
    assert edited == TEMPLATES["Cardiomegaly"]  # fragments dropped, then the denial of the named finding
    assert make_consistent("no acute disease .", [], HEAD) == ("no acute disease .", [])
    # a closing period matters only for the last sentence; a word of three letters makes a sentence
    assert not is_fragment("no acute disease") and is_fragment("no acute disease", last=True) and not is_fragment("no gas .")
    assert is_fragment("786.59.") and is_fragment("no xxxx .") and is_fragment("No XXXX .") and not is_fragment("the xxxx are clear .")
    assert not is_fragment("心脏大小正常 .") and not is_fragment("Herz normal groß .") and is_fragment("T12 ; 4 mm .")


def test_an_edit_that_only_cuts_the_end_keeps_the_decoded_log_probabilities(monkeypatch):
    model = tiny("radgen-small").eval()

    def text_ids(text: str) -> list[int]:  # a report's tokens as the model is trained on them (and decodes them)
        labels = model.tokenize_reports([text], findings=[[]])["labels"][0].tolist()
        return [t for t in labels if t not in (-100, model.eos_id())]

    full, short, other = "the heart is normal . the lungs are clear .", "the heart is normal .", "the lungs are clear ."
    ids = text_ids(full)
    assert text_ids(short) == ids[: len(text_ids(short))]  # the shortcut's precondition holds for this tokenizer
    marks = [-0.5 - k for k in range(len(ids))]  # not the model's values: they survive only where nothing is re-scored
    reports = [GeneratedReport(text=full, token_ids=list(ids), token_logprobs=list(marks), tokens=[]) for _ in range(2)]
    edits = iter([(short, ["cut the end"]), (other, ["dropped the first sentence"])])
    monkeypatch.setattr(decoding_module, "make_consistent", lambda text, findings, observations: next(edits))
    images = pixels(model, batch=2)
    with torch.no_grad():
        model._make_consistent(reports, model.visual_tokens(images), [[], []])
    assert reports[0].text == short and reports[0].token_ids == text_ids(short) and reports[0].token_logprobs == marks[: len(text_ids(short))]
    # the other edit changes what comes before its tokens: re-scored by the model
    batch = model.tokenize_reports([other], findings=[[]])
    with torch.no_grad():
        logits = model(**batch, pixel_values=images[1:]).logits.float().log_softmax(-1)
    start = model.num_visual_tokens + len(model.prefix_ids([]))
    expected = [float(logits[0, start + j - 1, t]) for j, t in enumerate(reports[1].token_ids)]
    assert reports[1].token_ids == text_ids(other)
    torch.testing.assert_close(torch.tensor(reports[1].token_logprobs), torch.tensor(expected), atol=2e-5, rtol=2e-6)


def test_a_sentence_clearing_the_study_is_kept_dropped_or_reworded_beside_a_finding_it_contradicts():
    text = "the heart is enlarged . no acute cardiopulmonary disease . there is a pleural effusion ."
    findings = ["Cardiomegaly", "Pleural Effusion"]
    assert make_consistent(text, findings) == (text, [])  # the default keeps it (val: n-gram scores fell without it)
    dropped, edits = make_consistent(text, findings, all_clear="drop")
    assert dropped == "the heart is enlarged . there is a pleural effusion ."
    assert edits == ["dropped 'no acute cardiopulmonary disease .' (clears the study, beside Cardiomegaly, Pleural Effusion)"]
    reworded, _ = make_consistent(text, findings, all_clear="reword")
    assert reworded == "the heart is enlarged . no other acute cardiopulmonary disease . there is a pleural effusion ."
    assert make_consistent("no evidence of active disease .", ["Edema"], all_clear="reword")[0].startswith(
        "no evidence of other active disease .")
    assert "normal chest" not in make_consistent("normal chest .", ["Edema"], all_clear="reword")[0]  # nothing to reword: dropped
    # beside devices, a lesion or a fracture IU's radiologists still clear the study: it stays
    granuloma = "calcified granuloma in the right upper lobe . no acute disease ."
    assert "no acute disease ." in make_consistent(granuloma, ["Lung Lesion", "Support Devices"], all_clear="drop")[0]
    with pytest.raises(ValueError, match="all_clear='remove'"):
        make_consistent(text, findings, all_clear="remove")
