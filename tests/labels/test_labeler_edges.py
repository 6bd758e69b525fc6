"""Labeler edges found by mutation testing (scripts/mutation.sh labels): normalisation, sentence
splitting, aggregation order, exclusions at the mention's own start, the batch helper."""

from __future__ import annotations

import pytest

from radgen.labels.labeler import find_mentions, label_report, label_reports, normalize, split_sentences


def test_carriage_returns_and_tabs_are_normalised():
    assert normalize(None) == ""
    # "\r" ends a line like "\n": the "no" of the first line does not reach the second
    assert split_sentences("No effusion\rSmall pneumothorax") == ["no effusion", "small pneumothorax"]
    assert label_report("No effusion\rSmall pneumothorax")["Pneumothorax"] == 1
    # a tab or a double space inside a two-word mention is still the mention
    assert label_report("Small amount of pleural\tfluid.")["Pleural Effusion"] == 1
    assert label_report("Small amount of pleural  fluid.")["Pleural Effusion"] == 1


def test_sentence_split_drops_empty_and_comma_only_pieces():
    assert split_sentences("No effusion,. , . Small nodule.") == ["no effusion", "small nodule"]


def test_post_window_ends_at_and():
    # "and the effusion is not seen" negates the effusion, not the pneumothorax before it
    labels = label_report("Small pneumothorax and the effusion is not seen.")
    assert (labels["Pneumothorax"], labels["Pleural Effusion"]) == (1, 0)


def test_aggregation_does_not_depend_on_mention_order():
    # CheXpert: any positive wins, else any uncertain, else negative; whichever sentence comes first
    assert label_report("Small left effusion. No effusion on the right.")["Pleural Effusion"] == 1
    assert label_report("Possible small left effusion. No effusion on the right.")["Pleural Effusion"] == -1
    assert label_report("Small left effusion. Possible right effusion.")["Pleural Effusion"] == 1


def test_exclusion_that_starts_with_the_mention():
    # "mass effect" is not a lung mass, though "mass" starts where the exclusion starts
    assert label_report("Mass effect on the trachea from a goiter.")["Lung Lesion"] is None


def test_mention_at_the_start_of_a_clause():
    # ";" ends the first clause right before the mention: its "no" must not reach it
    assert label_report("No pneumothorax;small right effusion.")["Pleural Effusion"] == 1


def test_mentions_carry_the_matched_phrase():
    [mention] = find_mentions("Small left pleural effusion.")
    assert (mention.observation, mention.text, mention.label) == ("Pleural Effusion", "effusion", 1)
    [size] = find_mentions("The heart is enlarged.")  # a size statement names its anatomy
    assert (size.observation, size.text, size.label) == ("Cardiomegaly", "heart", 1)


def test_deidentified_only_report_is_not_blank():
    # IU reports can be nothing but de-identified words: that states no finding (CheXpert: No Finding)
    labels = label_report("XXXX.")
    assert labels["No Finding"] == 1 and sum(v is not None for v in labels.values()) == 1


def test_label_reports_labels_each_text_and_copies_repeats():
    labels = label_reports(["No effusion.", "Small effusion.", "No effusion."])
    assert [row["Pleural Effusion"] for row in labels] == [0, 1, 0]
    labels[0]["Pleural Effusion"] = 1
    assert labels[2]["Pleural Effusion"] == 0  # repeated texts share work, not the dict


# Size statements (Cardiomegaly / Enlarged Cardiomediastinum): the size word nearest the anatomy decides,
# searched only in the anatomy's comma-delimited part of the clause. Each sentence below gets another
# label when a size word from a neighbouring comma part counts, when distances are measured from the
# wrong place, or when a tie does not go to the normal statement (found by mutation testing).
SIZE_STATEMENTS = [
    # a nearer "normal" in the comma part before the heart does not count
    ("mediastinum normal, heart is mildly enlarged.", {"Cardiomegaly": 1, "Enlarged Cardiomediastinum": 0}),
    # ... nor one in the comma part after it
    ("There is enlargement of the cardiac silhouette, normal pulmonary vasculature.", {"Cardiomegaly": 1}),
    # the part starts right after the comma, also without a space
    ("lungs are clear,borderline cardiac silhouette.", {"Cardiomegaly": 1}),
    # distances are measured from the anatomy's own position inside the part, on both sides
    ("lungs are clear, the heart is normal and the aorta is enlarged.", {"Cardiomegaly": 0}),
    ("lungs are clear, the heart is enlarged and its contour is normal.", {"Cardiomegaly": 1}),
    ("lungs are clear, normal cardiac silhouette size appears increased.", {"Cardiomegaly": 0}),
    ("the lungs are clear bilaterally, globular cardiac contour compared with normal.", {"Cardiomegaly": 1}),
    # equally near on both sides: the normal statement wins
    ("globular cardiac contour normal.", {"Cardiomegaly": 0}),
]


@pytest.mark.parametrize("sentence, expected", SIZE_STATEMENTS)
def test_size_statement_reads_only_its_comma_part(sentence, expected):
    labels = label_report(sentence)
    assert {name: labels[name] for name in expected} == expected


def test_an_excluded_mention_does_not_hide_a_later_one():
    # "pericardial effusion" is excluded for Pleural Effusion; the pleural effusion after it still counts
    assert label_report("Pericardial effusion and small left pleural effusion.")["Pleural Effusion"] == 1
    assert label_report("Small pericardial effusion, no pleural effusion.")["Pleural Effusion"] == 0


def test_a_mention_right_after_a_semicolon_belongs_to_its_own_clause():
    # ";" ends the clause of "no pneumothorax": the "no" does not negate what follows it
    labels = label_report("No pneumothorax;cardiac silhouette is enlarged.")
    assert (labels["Pneumothorax"], labels["Cardiomegaly"]) == (0, 1)
