"""Every negation, uncertainty and pseudo-negation cue of the labeler has a sentence that needs it.

Each sentence below turns on one cue of radgen.labels.rules: its label is the one that cue gives,
and deleting the cue changes it. `test_deleting_any_cue_changes_a_label` checks the second half
mechanically, so a cue added without a sentence here (or a sentence that stops needing its cue)
fails. Expected labels follow the CheXpert labeler's convention (1 positive, 0 negative,
-1 uncertain), written by hand from what each sentence says.
"""

from __future__ import annotations

import re

import pytest

from radgen.labels import labeler, rules
from radgen.labels.labeler import label_report

# (sentence, observation, label, the cue it turns on)
CUE_SENTENCES = [
    # ---- negation before the mention
    ("No pleural effusion.", "Pleural Effusion", 0, "no"),
    ("The findings are not consistent with pneumonia.", "Pneumonia", 0, "not"),
    ("The lungs are clear. Nor is there pleural effusion.", "Pleural Effusion", 0, "nor"),
    ("Lungs are clear without consolidation.", "Consolidation", 0, "without"),
    ("Negative radiograph for acute fracture.", "Fracture", 0, "negative ... for"),
    ("The lungs are free of consolidation.", "Consolidation", 0, "free of"),
    ("The lungs are clear of infiltrate.", "Lung Opacity", 0, "clear of"),
    ("Absence of pleural effusion.", "Pleural Effusion", 0, "absence of"),
    ("Absent pneumothorax on this study.", "Pneumothorax", 0, "absent"),
    ("Interval resolution of the right pleural effusion.", "Pleural Effusion", 0, "resolution of"),
    ("Resolved left lower lobe pneumonia.", "Pneumonia", 0, "resolved"),
    ("Status post removal of the left chest tube.", "Support Devices", 0, "removal of"),
    ("Interval removal right IJ catheter.", "Support Devices", 0, "interval removal"),
    ("Study ruled out pneumothorax.", "Pneumothorax", 0, "ruled out"),
    ("Exam to rule out fracture.", "Fracture", 0, "rule out"),
    ("If there is concern for rib fracture, consider a rib series.", "Fracture", 0, "if"),
    # ---- negation after the mention
    ("Pneumothorax was not found.", "Pneumothorax", 0, "was not"),
    ("Pneumothorax not seen.", "Pneumothorax", 0, "not seen"),
    ("Pneumothorax absent.", "Pneumothorax", 0, "absent (after)"),
    ("The pneumothorax on the right side has resolved.", "Pneumothorax", 0, "has resolved (5 words on)"),
    ("Pneumothorax negative.", "Pneumothorax", 0, "negative (after)"),
    ("Interstitial markings are within normal limits.", "Lung Opacity", 0, "within normal limits"),
    ("Heart size and pulmonary vascular engorgement appear within limits of normal.", "Edema", 0, "within limits of normal"),
    ("A small pneumothorax may not be visible on this view.", "Pneumothorax", 0, "may not be visible"),
    ("Pneumothorax has been ruled out.", "Pneumothorax", 0, "has been ruled out"),
    ("Acute fracture is excluded.", "Fracture", 0, "is excluded"),
    # ---- pseudo-negations: look like negation, are not
    ("No change in the moderate left pleural effusion.", "Pleural Effusion", 1, "no change"),
    ("Not significantly changed small left pleural effusion.", "Pleural Effusion", 1, "not significantly changed"),
    ("The left pleural effusion is not significantly changed.", "Pleural Effusion", 1, "not ... changed (after)"),
    ("Gram negative cause of pneumonia.", "Pneumonia", 1, "gram negative"),
    ("Without interval change in the left pleural effusion.", "Pleural Effusion", 1, "without interval change"),
    ("Pneumothorax no longer seen, small left pleural effusion persists.", "Pleural Effusion", 1, "no longer seen (spent)"),
    ("Pneumothorax no longer seen, small left pleural effusion persists.", "Pneumothorax", 0, "no longer seen"),
    # ---- uncertainty that wins over negation
    ("Cannot rule out pneumothorax.", "Pneumothorax", -1, "cannot rule out"),
    ("Can not rule out pneumothorax.", "Pneumothorax", -1, "can not rule out"),
    ("Pneumothorax is not excluded.", "Pneumothorax", -1, "not excluded"),
    ("Pneumonia has not been excluded.", "Pneumonia", -1, "not been excluded"),
    ("Pneumonia is not entirely excluded.", "Pneumonia", -1, "not entirely excluded"),
    ("No new consolidation.", "Consolidation", -1, "no new"),
    ("No evidence to rule out pneumonia.", "Pneumonia", -1, "no evidence to rule out"),
    # ---- uncertainty before the mention
    ("Scarring or atelectasis.", "Atelectasis", -1, "or (before)"),
    ("Findings compatible with pneumonia.", "Pneumonia", -1, "compatible with"),
    ("Right lower lobe opacity, ? pneumonia.", "Pneumonia", -1, "?"),
    # ---- uncertainty after the mention
    ("Right lower lobe pneumonia is possible.", "Pneumonia", -1, "is possible"),
    ("Left lower lobe pneumonia is suspected.", "Pneumonia", -1, "is suspected"),
    ("Left basilar atelectasis or scarring.", "Atelectasis", -1, "or (after)"),
    ("Left basilar atelectasis/scarring.", "Atelectasis", -1, "/"),
    ("A small left pleural effusion may be present.", "Pleural Effusion", -1, "may be"),
    ("Left base opacity may represent atelectasis.", "Atelectasis", -1, "may represent (before)"),
    ("Left basilar atelectasis versus scarring.", "Atelectasis", -1, "versus (after)"),
    ("Pneumonia?", "Pneumonia", -1, "? (after)"),
    # ---- scope ends: a cue does not reach past these
    ("No pneumothorax, but there is a small right effusion.", "Pleural Effusion", 1, "but"),
    ("No pneumothorax however small right effusion.", "Pleural Effusion", 1, "however"),
    ("No pneumothorax; small right effusion.", "Pleural Effusion", 1, ";"),
    ("No pneumothorax - small right effusion.", "Pleural Effusion", 1, " - "),
    ("No consolidation, which excludes pneumonia, with a small right effusion.", "Pleural Effusion", 1, "with a"),
]

# One word of PRE_UNCERTAINTY's first pattern per sentence (the pattern is one alternation).
UNCERTAIN_WORDS = ["possible", "possibly", "probable", "probably", "likely", "questionable", "question of", "questioned",
                   "suspected", "suspicious for", "equivocal", "indeterminate", "cannot exclude", "can not exclude",
                   "could be", "may be", "might be", "perhaps", "presumed", "presumably", "suggesting", "concerning for",
                   "worrisome for", "vs", "versus", "differential includes", "considered"]


@pytest.mark.parametrize("text, observation, expected, cue", CUE_SENTENCES, ids=[row[3] for row in CUE_SENTENCES])
def test_cue_sentence(text, observation, expected, cue):
    assert label_report(text)[observation] == expected


@pytest.mark.parametrize("word", UNCERTAIN_WORDS)
def test_each_uncertainty_word_before_a_mention(word):
    # "atelectasis" on its own is positive; each word in front of it makes it uncertain
    assert label_report("Left basilar atelectasis.")["Atelectasis"] == 1
    assert label_report(f"Findings {word} left basilar atelectasis.")["Atelectasis"] == -1


# Cue lists the labeler compiles once at import: (rules name, labeler attribute).
CUE_LISTS = [
    ("PRE_NEGATION", "_PRE_NEG"),
    ("POST_NEGATION", "_POST_NEG"),
    ("PSEUDO_NEGATION", "_PSEUDO"),
    ("SPENT_NEGATION", "_SPENT"),
    ("PRE_UNCERTAINTY", "_PRE_UNC"),
    ("POST_UNCERTAINTY", "_POST_UNC"),
    ("NEGATED_UNCERTAINTY", "_NEG_UNC"),
]

# Cues no sentence can need, because another cue matches every text they match (equivalent mutants).
# Each reason names the cue that covers it.
REDUNDANT = {
    r"\bnegative for\b": r"'negative\b(?= (\w+ ){0,2}(for|of)\b)' matches 'negative for' with zero words between",
    r"\bno (evidence|sign|signs|finding|findings) of\b": r"'\bno\b' matches the same 'no'",
    r"^ ?(is|are) no longer\b": r"the first POST_NEGATION cue '(is|are|...)( been)? (not|no longer)' with zero words before",
    r"\bcannot be (excluded|ruled out)\b": "NEGATED_UNCERTAINTY sees the unmasked text first and answers uncertain",
    r"\bcan not be (excluded|ruled out)\b": "NEGATED_UNCERTAINTY sees the unmasked text first and answers uncertain",
    r"\bcannot (rule out|be excluded)\b": "NEGATED_UNCERTAINTY's 'cannot (exclude|rule out|be excluded|be ruled out)' answers first",
    r"\bnot (been )?excluded\b": "NEGATED_UNCERTAINTY's 'not (be |been )?...excluded' sees the unmasked text first",
}


def _labels(rows):
    return [label_report(text)[observation] for text, observation, *_ in rows]


def _all_rows():
    return CUE_SENTENCES + [(f"Findings {word} left basilar atelectasis.", "Atelectasis", -1, word) for word in UNCERTAIN_WORDS]


@pytest.mark.parametrize("rules_name, attribute", CUE_LISTS)
def test_deleting_any_cue_changes_a_label(monkeypatch, rules_name, attribute):
    rows = _all_rows()
    original = _labels(rows)
    patterns = getattr(rules, rules_name)
    unneeded = []
    for index, pattern in enumerate(patterns):
        rest = patterns[:index] + patterns[index + 1:]
        # an empty alternation would match everywhere; a pattern that cannot match stands for "no cue"
        monkeypatch.setattr(labeler, attribute, labeler._compile(rest) if rest else re.compile(r"(?!x)x"))
        if _labels(rows) == original and pattern not in REDUNDANT:
            unneeded.append(pattern)
    assert not unneeded, f"{rules_name}: no sentence needs {unneeded}"


def test_redundant_cues_are_still_in_the_rules():
    # a stale entry here would excuse nothing, but it would hide that the rules changed
    every = {p for name, _ in CUE_LISTS for p in getattr(rules, name)}
    assert set(REDUNDANT) <= every
