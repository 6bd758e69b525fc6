"""Rule-based CheXpert labeler: report text -> 14 observations (1 positive, 0 negative, -1 uncertain, None).

No weights, no network, no parser: it follows the CheXpert labeler's pipeline with token-window rules
instead of dependency patterns.

1. Normalize: lower case, drop list numbering ("1. "), keep IU's ``xxxx`` de-identification tokens as
   plain words (so "no xxxx of pleural effusion" is still negated by "no").
2. Split sentences at periods (not decimal points) and split each sentence into clauses at scope
   terminators ("but", "however", "which", ";" ...): a cue never reaches across them.
3. Find mentions per observation (rules.MENTIONS minus rules.UNMENTIONS). Cardiomegaly and Enlarged
   Cardiomediastinum are also decided from size statements about the heart / mediastinum
   ("heart size is normal" -> 0, "the heart is enlarged" -> 1, "borderline" -> 1).
4. Classify each mention: uncertainty that beats negation ("cannot exclude", "no new") -> -1;
   negation before the mention in its clause or right after it ("effusion is not seen") -> 0;
   uncertainty before or after ("possible", "versus", "may represent") -> -1; else 1.
5. Aggregate mentions as CheXpert does: any 1 -> 1, else any -1 -> -1, else 0. No Finding is 1 when no
   observation other than Support Devices is 1 or -1 (CheXpert's rule), otherwise None. A blank
   report gets no labels at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from radgen.labels import rules
from radgen.labels.observations import CHEXPERT_14, NO_FINDING, NEGATIVE, POSITIVE, UNCERTAIN


def _compile(patterns: Iterable[str]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_MENTIONS = {name: _compile(p) for name, p in rules.MENTIONS.items()}
_UNMENTIONS = {name: _compile(p) for name, p in rules.UNMENTIONS.items() if p}
_PSEUDO = _compile(rules.PSEUDO_NEGATION)
_SPENT = _compile(rules.SPENT_NEGATION)
_PRE_NEG = _compile(rules.PRE_NEGATION)
_POST_NEG = _compile(rules.POST_NEGATION)
_PRE_UNC = _compile(rules.PRE_UNCERTAINTY)
_POST_UNC = _compile(rules.POST_UNCERTAINTY)
_NEG_UNC = _compile(rules.NEGATED_UNCERTAINTY)
_TERMINATORS = re.compile(rules.SCOPE_TERMINATORS)
_HEART = re.compile(rules.HEART)
_MEDIASTINUM = re.compile(rules.MEDIASTINUM)
_ENLARGED = re.compile(rules.ENLARGED)
_NORMAL_SIZE = re.compile(rules.NORMAL_SIZE)
_NUMBERING = re.compile(r"(^|\s)\d+\.\s+(?=[a-z])")
_SENTENCE_END = re.compile(r"(?<!\d)[.!](?!\d)|\n")
_POST_WINDOW_END = re.compile(r",| and (?!pulmonary|mediastin|heart|cardiac|vascular)")


@dataclass(frozen=True)
class Mention:
    """One phrase found in a report, with the label its context gives it."""

    observation: str
    text: str
    sentence: str
    label: int


def normalize(text: str) -> str:
    text = (text or "").lower().replace("\r", "\n")
    text = _NUMBERING.sub(" ", text)
    text = re.sub(r"[ \t]+", " ", text)
    return text


def split_sentences(text: str) -> list[str]:
    return [s.strip(" ,") for s in _SENTENCE_END.split(normalize(text)) if s and s.strip(" ,")]


def _clauses(sentence: str) -> list[tuple[int, int]]:
    """Character spans of a sentence's clauses, cut at scope terminators."""
    cuts = [0]
    for match in _TERMINATORS.finditer(sentence):
        cuts.extend([match.start(), match.end()])
    cuts.append(len(sentence))
    return [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2)]


def _classify(pre: str, post: str) -> int:
    """Label one mention from the text before it (same clause) and after it (short window)."""
    pre_masked = _PSEUDO.sub(" ", _SPENT.sub(" ", pre))
    post_window = _POST_WINDOW_END.split(post, maxsplit=1)[0]
    if _NEG_UNC.search(pre) or _NEG_UNC.search(post_window):
        return UNCERTAIN
    # "the effusion is not significantly changed": a pseudo-negation after the mention is no negation either
    if _PRE_NEG.search(pre_masked) or _POST_NEG.search(_PSEUDO.sub(" ", post_window)):
        return NEGATIVE
    if _PRE_UNC.search(pre_masked) or _POST_UNC.search(post_window):
        return UNCERTAIN
    return POSITIVE


def _excluded_spans(sentence: str, observation: str) -> list[tuple[int, int]]:
    pattern = _UNMENTIONS.get(observation)
    return [m.span() for m in pattern.finditer(sentence)] if pattern else []


def _nearest(pattern: re.Pattern, text: str, start: int, end: int) -> int | None:
    """Characters between the span (start, end) and the closest match of `pattern` in `text`."""
    gaps = [max(m.start() - end, start - m.end(), 0) for m in pattern.finditer(text)]
    return min(gaps) if gaps else None


def _size_statement(sentence: str, start: int, end: int, clause: tuple[int, int]) -> int | None:
    """Label a heart/mediastinum size statement in its comma-delimited part of the clause.

    The size word nearest the anatomy decides: in "normal heart size and large lung volumes" the
    heart is normal, in "the heart is enlarged and the mediastinum is normal" only the heart is large.
    A tie goes to the normal statement ("no enlargement of the heart": both end at the same place).
    """
    left = sentence.rfind(",", clause[0], start)
    right = sentence.find(",", end, clause[1])
    begin, stop = (left + 1 if left >= 0 else clause[0]), (right if right >= 0 else clause[1])
    part = sentence[begin:stop]
    enlarged = _nearest(_ENLARGED, part, start - begin, end - begin)
    normal = _nearest(_NORMAL_SIZE, part, start - begin, end - begin)
    if enlarged is not None and (normal is None or enlarged < normal):
        return _classify(sentence[begin:start], sentence[end:stop])
    if normal is not None:
        return NEGATIVE
    return None


def find_mentions(text: str) -> list[Mention]:
    """Every observation mention in `text` with its label (before aggregation)."""
    found: list[Mention] = []
    for sentence in split_sentences(text):
        clauses = _clauses(sentence)

        def clause_of(position: int) -> tuple[int, int]:
            for span in clauses:
                if span[0] <= position < span[1] or position == span[1]:
                    return span
            return (0, len(sentence))

        for observation, pattern in _MENTIONS.items():
            excluded = _excluded_spans(sentence, observation)
            for match in pattern.finditer(sentence):
                start, end = match.span()
                if any(a <= start < b for a, b in excluded):
                    continue
                clause = clause_of(start)
                label = _classify(sentence[clause[0] : start], sentence[end : clause[1]])
                found.append(Mention(observation, match.group(0), sentence, label))
        for observation, anatomy in (("Cardiomegaly", _HEART), ("Enlarged Cardiomediastinum", _MEDIASTINUM)):
            for match in anatomy.finditer(sentence):
                clause = clause_of(match.start())
                label = _size_statement(sentence, match.start(), match.end(), clause)
                if label is not None:
                    found.append(Mention(observation, match.group(0), sentence, label))
    return found


def aggregate(mentions: Iterable[Mention]) -> dict[str, int | None]:
    """CheXpert's aggregation: 1 beats -1 beats 0 per observation; No Finding from the rest."""
    labels: dict[str, int | None] = {name: None for name in CHEXPERT_14}
    for mention in mentions:
        current = labels[mention.observation]
        if current is None or mention.label == POSITIVE or (mention.label == UNCERTAIN and current == NEGATIVE):
            labels[mention.observation] = mention.label
    findings = any(labels[name] in (POSITIVE, UNCERTAIN) for name in CHEXPERT_14 if name not in (NO_FINDING, "Support Devices"))
    labels[NO_FINDING] = None if findings else POSITIVE
    return labels


def label_report(text: str) -> dict[str, int | None]:
    """Label one report: {observation: 1 | 0 | -1 | None} for the 14 CheXpert observations.

    A blank report states nothing, so every label is None. (CheXpert's aggregation would call it
    No Finding, which would give an empty generated report full clinical-efficacy credit on every
    normal study.)
    """
    if not (text or "").strip(" .\n\t"):
        return {name: None for name in CHEXPERT_14}
    return aggregate(find_mentions(text))


def label_reports(texts: Iterable[str]) -> list[dict[str, int | None]]:
    """Labels of each text; a text that repeats is labeled once (generated reports repeat a lot)."""
    texts = list(texts)
    labels = {text: label_report(text) for text in dict.fromkeys(texts)}
    return [dict(labels[text]) for text in texts]
