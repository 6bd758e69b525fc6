"""Every mention and unmention phrase of the labeler has a sentence that needs it.

The mention-table counterpart of test_cues.py: each sentence below is labelled by one pattern of
radgen.labels.rules.MENTIONS (1: reported) or is kept from being a mention by one pattern of
UNMENTIONS (None: not mentioned). `test_deleting_any_phrase_changes_a_label` deletes each pattern in
turn (what mutmut's string mutation of rules.py does: `"XX...XX"` matches nothing) and requires some
sentence to change label, so a phrase no sentence needs fails. Labels written by hand from what
each sentence says.
"""

from __future__ import annotations

import re

import pytest

from radgen.labels import labeler, rules
from radgen.labels.labeler import label_report

# (sentence, observation, label: 1 reported, None not mentioned)
MENTION_SENTENCES = [
    ("Enlarged cardiomediastinum.", "Enlarged Cardiomediastinum", 1),
    ("Mediastinal lymphadenopathy.", "Enlarged Cardiomediastinum", 1),
    ("Pneumomediastinum.", "Enlarged Cardiomediastinum", 1),
    ("Cardiomegaly.", "Cardiomegaly", 1),
    ("Cardiac megaly.", "Cardiomegaly", 1),
    ("Mediastinum normal with large heart.", "Cardiomegaly", 1),
    ("Cardiac silhouette enlargement.", "Cardiomegaly", 1),
    ("Right upper lobe mass.", "Lung Lesion", 1),
    ("Pulmonary nodule.", "Lung Lesion", 1),
    ("Lump.", "Lung Lesion", 1),
    ("Cavitary lesion.", "Lung Lesion", 1),
    ("Carcinoma.", "Lung Lesion", 1),
    ("Neoplasm.", "Lung Lesion", 1),
    ("Tumor.", "Lung Lesion", 1),
    ("Calcified granuloma.", "Lung Lesion", 1),
    ("Parenchymal lesion.", "Lung Lesion", 1),
    ("Metastatic disease.", "Lung Lesion", 1),
    ("Basilar opacity.", "Lung Opacity", 1),
    ("Infiltrate.", "Lung Opacity", 1),
    ("Airspace disease.", "Lung Opacity", 1),
    ("Increased density.", "Lung Opacity", 1),
    ("Interstitial prominence.", "Lung Opacity", 1),
    ("Coarse lung markings.", "Lung Opacity", 1),
    ("Reticulation.", "Lung Opacity", 1),
    ("Scarring.", "Lung Opacity", 1),
    ("Peribronchial cuffing.", "Lung Opacity", 1),
    ("Haziness at the bases.", "Lung Opacity", 1),
    ("Ground-glass.", "Lung Opacity", 1),
    ("Edema.", "Edema", 1),
    ("Heart failure.", "Edema", 1),
    ("CHF.", "Edema", 1),
    ("Venous congestion.", "Edema", 1),
    ("Congestive changes.", "Edema", 1),
    ("Vascular indistinctness.", "Edema", 1),
    ("Indistinct vasculature.", "Edema", 1),
    ("Cephalization.", "Edema", 1),
    ("Kerley lines.", "Edema", 1),
    ("Increased pulmonary vascularity.", "Edema", 1),
    ("Pulmonary vasculature is engorged.", "Edema", 1),
    ("Pulmonary venous hypertension.", "Edema", 1),
    ("Consolidation.", "Consolidation", 1),
    ("Pneumonia.", "Pneumonia", 1),
    ("Infection.", "Pneumonia", 1),
    ("Infectious process.", "Pneumonia", 1),
    ("Pneumonitis.", "Pneumonia", 1),
    ("Bronchopneumonia.", "Pneumonia", 1),
    ("Atelectasis.", "Atelectasis", 1),
    ("Lobar collapse.", "Atelectasis", 1),
    ("Collapse of the left lung.", "Atelectasis", 1),
    ("Pneumothorax.", "Pneumothorax", 1),
    ("Hydropneumothorax.", "Pneumothorax", 1),
    ("Effusion.", "Pleural Effusion", 1),
    ("Pleural fluid.", "Pleural Effusion", 1),
    ("Blunting of the costophrenic angle.", "Pleural Effusion", 1),
    ("Costophrenic angle is blunted.", "Pleural Effusion", 1),
    ("Hydrothorax.", "Pleural Effusion", 1),
    ("Fluid in the minor fissure.", "Pleural Effusion", 1),
    ("Pleural thickening.", "Pleural Other", 1),
    ("Pleuroparenchymal scarring.", "Pleural Other", 1),
    ("Fibrothorax.", "Pleural Other", 1),
    ("Apical cap.", "Pleural Other", 1),
    ("Thickening of the pleura.", "Pleural Other", 1),
    ("Rib fracture.", "Fracture", 1),
    ("Rib fx.", "Fracture", 1),
    ("Pacer.", "Support Devices", 1),
    ("Pacemaker.", "Support Devices", 1),
    ("Pacing wires.", "Support Devices", 1),
    ("AICD.", "Support Devices", 1),
    ("Defibrillator.", "Support Devices", 1),
    ("Leads.", "Support Devices", 1),
    ("PICC.", "Support Devices", 1),
    ("Catheter.", "Support Devices", 1),
    ("Central line.", "Support Devices", 1),
    ("Line tip.", "Support Devices", 1),
    ("Mediport.", "Support Devices", 1),
    ("Tube.", "Support Devices", 1),
    ("Tracheostomy.", "Support Devices", 1),
    ("Stent.", "Support Devices", 1),
    ("Prosthetic valve.", "Support Devices", 1),
    ("Valve replacement.", "Support Devices", 1),
    ("Hardware.", "Support Devices", 1),
    ("Screws.", "Support Devices", 1),
    ("Plate.", "Support Devices", 1),
    ("Spinal fixation.", "Support Devices", 1),
    ("Rods.", "Support Devices", 1),
    ("Prostheses.", "Support Devices", 1),
    ("Arthroplasty.", "Support Devices", 1),
    ("Device.", "Support Devices", 1),
    ("Coils.", "Support Devices", 1),
    ("Drain.", "Support Devices", 1),
    ("Cannula.", "Support Devices", 1),
    ("IVC filter.", "Support Devices", 1),
    ("Loop recorder.", "Support Devices", 1),
    ("Apparatus.", "Support Devices", 1),
    ("Neurostimulator.", "Support Devices", 1),
    ("Stimulator.", "Support Devices", 1),
    ("Xxxx tip in the SVC.", "Support Devices", 1),
    ("Xxxx-a-xxxx.", "Support Devices", 1),
    ("Cardiac xxxx generator.", "Support Devices", 1),
    ("Shunt.", "Support Devices", 1),
    ("Tubing.", "Support Devices", 1),
    ("Bone anchor.", "Support Devices", 1),
    ("Prosthetic hip.", "Support Devices", 1),
    # unmentions: look like a mention of the observation, are not one
    ("Pericardial effusion.", "Pleural Effusion", None),
    ("Joint effusion.", "Pleural Effusion", None),
    ("Pleural scarring.", "Lung Opacity", None),
    ("Pleuroparenchymal scarring.", "Lung Opacity", None),
    ("Bone density.", "Lung Opacity", None),
    ("Soft tissue density.", "Lung Opacity", None),
    ("Nipple opacity.", "Lung Opacity", None),
    ("Breast opacity.", "Lung Opacity", None),
    ("Calcified granuloma density.", "Lung Opacity", None),
    ("Nodular opacity.", "Lung Opacity", None),
    ("Osseous density.", "Lung Opacity", None),
    ("Opacity in the upper abdomen.", "Lung Opacity", None),
    ("Sternotomy scar.", "Lung Opacity", None),
    ("Surgical scar.", "Lung Opacity", None),
    ("Metallic density.", "Lung Opacity", None),
    ("Soft tissue edema.", "Edema", None),
    ("Mass effect.", "Lung Lesion", None),
    ("Breast mass.", "Lung Lesion", None),
    ("Soft tissue mass.", "Lung Lesion", None),
    ("Nasogastric tube feeding.", "Support Devices", None),
    ("Tubes and lines are not.", "Support Devices", None),
    ("Device for the.", "Support Devices", None),
    ("Breast prostheses.", "Support Devices", None),
]

# Patterns no sentence can need, because of another rule (equivalent mutants), with the reason.
REDUNDANT = {
    r"\bcardiac silhouette enlargement\b": "a size statement: HEART's 'cardiac silhouette' next to ENLARGED's 'enlargement' gives 1 on its own",
    r"\b(mitral|aortic) valve replacement\b": "'valve (replacement|prosthesis)' matches inside every match",
    r"\bfibrosis of the pleura": "no Lung Opacity mention matches inside it",
    r"\b(lymph )?nodes?\b(?=.*\bnodal\b)": "no Lung Lesion mention matches 'node(s)' ('nodul\\w*' needs 'nodul')",
    r"\bleads? to\b": "the mention 'leads?\\b(?! to\\b)' already refuses 'lead(s) to'",
    r"\b(tubular|tubul\w*)\b": "no device mention matches inside it ('tubes?\\b' needs 'tube')",
    r"\bsilhouette\b": "no device mention matches inside 'silhouette'",
}

TABLES = [("MENTIONS", "_MENTIONS"), ("UNMENTIONS", "_UNMENTIONS")]


@pytest.mark.parametrize("text, observation, expected", MENTION_SENTENCES, ids=[row[0] for row in MENTION_SENTENCES])
def test_mention_sentence(text, observation, expected):
    assert label_report(text)[observation] == expected


def _labels():
    return [label_report(text)[observation] for text, observation, _ in MENTION_SENTENCES]


@pytest.mark.parametrize("rules_name, attribute", TABLES)
def test_deleting_any_phrase_changes_a_label(monkeypatch, rules_name, attribute):
    original = _labels()
    unneeded = []
    for observation, patterns in getattr(rules, rules_name).items():
        for index, pattern in enumerate(patterns):
            rest = patterns[:index] + patterns[index + 1:]
            compiled = dict(getattr(labeler, attribute))
            compiled[observation] = labeler._compile(rest) if rest else re.compile(r"(?!x)x")  # matches nothing
            monkeypatch.setattr(labeler, attribute, compiled)
            if _labels() == original and pattern not in REDUNDANT:
                unneeded.append(f"{observation}: {pattern}")
    assert not unneeded, f"{rules_name}: no sentence needs {unneeded}"


def test_redundant_phrases_are_still_in_the_rules():
    every = {p for name, _ in TABLES for patterns in getattr(rules, name).values() for p in patterns}
    assert set(REDUNDANT) <= every
