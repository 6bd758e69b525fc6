"""Rule-based CheXpert labeler on hand-written sentences with known labels."""

import pytest

from radgen.labels.labeler import label_report, split_sentences
from radgen.labels.observations import CHEXPERT_14


@pytest.mark.parametrize(
    "text, observation, expected",
    [
        # plain positives
        ("There is a small left pleural effusion.", "Pleural Effusion", 1),
        ("Cardiomegaly.", "Cardiomegaly", 1),
        ("The heart is enlarged.", "Cardiomegaly", 1),
        ("Right internal jugular central venous catheter tip in the SVC.", "Support Devices", 1),
        ("Calcified granuloma in the right upper lobe.", "Lung Lesion", 1),
        ("Healed right rib fracture.", "Fracture", 1),
        ("Blunting of the left costophrenic angle.", "Pleural Effusion", 1),
        # pre-negation, with lists and IU XXXX tokens
        ("No pleural effusion.", "Pleural Effusion", 0),
        ("No focal consolidation, pleural effusion, or pneumothorax.", "Pneumothorax", 0),
        ("There are no XXXX of a pleural effusion.", "Pleural Effusion", 0),
        ("No XXXX of pleural effusion.", "Pleural Effusion", 0),
        ("Negative for pneumothorax.", "Pneumothorax", 0),
        ("Lungs are clear without consolidation.", "Consolidation", 0),
        # post-negation and size statements
        ("Pneumothorax is not seen.", "Pneumothorax", 0),
        ("The previously seen effusion has resolved.", "Pleural Effusion", 0),
        ("Heart size is normal.", "Cardiomegaly", 0),
        ("The heart is normal in size.", "Cardiomegaly", 0),
        ("Heart size is upper limits of normal.", "Cardiomegaly", 0),
        ("The heart is not enlarged.", "Cardiomegaly", 0),
        # uncertainty
        ("Possible small right pleural effusion.", "Pleural Effusion", -1),
        ("Opacity in the left base may represent atelectasis.", "Atelectasis", -1),
        ("Left basilar atelectasis versus scarring.", "Atelectasis", -1),
        ("Pneumonia cannot be excluded.", "Pneumonia", -1),
        ("Cannot exclude a small pneumothorax.", "Pneumothorax", -1),
        ("No new consolidation.", "Consolidation", -1),
        # pseudo-negation is not negation
        ("No change in the moderate left pleural effusion.", "Pleural Effusion", 1),
        # scope ends at "but" and at sentence boundaries
        ("No pneumothorax, but there is a small right effusion.", "Pleural Effusion", 1),
        ("No pneumothorax, but there is a small right effusion.", "Pneumothorax", 0),
        ("No pneumothorax. Small right effusion.", "Pleural Effusion", 1),
        ("No focal consolidation however there is left lower lobe atelectasis.", "Atelectasis", 1),
        # IU de-identification masked the device word
        ("Right chest XXXX tip is visualized in the mid SVC.", "Support Devices", 1),
        ("Midline sternotomy XXXX. Left XXXX-a-XXXX with tip at the cavoatrial junction.", "Support Devices", 1),
        # alternatives are uncertain; hypotheticals and normal-limits statements are negative
        ("Opacity in the left base, atelectasis or scarring.", "Atelectasis", -1),
        ("If there is concern for rib fracture, consider a rib series.", "Fracture", 0),
        ("Heart size and pulmonary vascular engorgement appear within limits of normal.", "Edema", 0),
        ("The effusion is no longer seen.", "Pleural Effusion", 0),
        # exclusions
        ("Small pericardial effusion.", "Pleural Effusion", None),
        ("Plate-like atelectasis at the left base.", "Support Devices", None),
        # not mentioned
        ("The lungs are clear.", "Edema", None),
    ],
)
def test_observation_label(text, observation, expected):
    assert label_report(text)[observation] == expected


def test_mentions_aggregate_like_chexpert():
    # positive beats negative; uncertain beats negative
    assert label_report("No effusion on the right. Small left effusion.")["Pleural Effusion"] == 1
    assert label_report("No effusion on the right. Possible small left effusion.")["Pleural Effusion"] == -1


def test_no_finding_logic():
    normal = label_report("The heart is normal in size. The lungs are clear. No pneumothorax or pleural effusion.")
    assert normal["No Finding"] == 1
    assert normal["Cardiomegaly"] == 0 and normal["Pleural Effusion"] == 0 and normal["Pneumothorax"] == 0
    # a device alone does not rule out No Finding (CheXpert)
    assert label_report("Left chest port catheter tip in the SVC. Lungs are clear.")["No Finding"] == 1
    # uncertain findings do
    assert label_report("Possible right lower lobe pneumonia.")["No Finding"] is None
    assert set(normal) == set(CHEXPERT_14)


def test_sentence_split_keeps_decimals_and_drops_numbering():
    assert split_sentences("1. A 2.5 cm nodule. 2. No effusion.") == ["a 2.5 cm nodule", "no effusion"]


def test_blank_reports_state_nothing():
    for text in ("", "  ", " .", None):
        assert all(value is None for value in label_report(text).values())
    assert label_report("No acute disease.")["No Finding"] == 1
