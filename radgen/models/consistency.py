"""Findings-consistent reports: a grounded model's text must state the findings its prompt named.

Why: radgen-small's decoder, trained with the true findings in its prompt, learned them only weakly
(benchmarks/prompt_reliance.py on the shipped model: teacher-forced loss 0.087 nats/token lower with
the true prompt than with "none"; greedy text states cardiomegaly, effusion or devices in 0 of 16
studies whose prompt names them), because the normal template the IU reports are full of dominates.
So the report is edited, in the open:

1. each sentence the labeler reads as *denying* a finding the head named is dropped;
2. each sentence the labeler reads as *stating* (present or uncertain) an observation the head
   covers but did not name is dropped: the decoder's own finding statements are mostly wrong (its
   text alone scores finding micro-F1 0.20-0.25 on IU-Phantom, the head 0.73), and dropping them
   raised the shipped model's finding micro-F1 by 0.018 [0.007, 0.031] on the val split
   (benchmarks/consistency_replay.py) and by 0.014 on test, language unchanged (docs/benchmarks.md,
   "Grounding");
3. each named finding the remaining text does not state gets its plain sentence
   (radgen.labels.templates): where the first sentence on that finding dropped by rule 1 or 2
   stood, else at the end of the report. (Before 2026-12-01 all of them went at the start. Where
   the edited text keeps the decoded text's first tokens, scoring it reuses the decoding's KV cache
   up to the first change, `radgen.models.rescoring.score_tails`: at batch 32 the decoder
   computes about a tenth fewer positions a report, docs/benchmarks.md, Performance);
4. where the head named a finding of the lungs (`LUNG_FINDINGS`), "the lungs are clear" becomes
   "the lungs are otherwise clear", as radiologists write it: the decoder's commonest sentence
   (254 of 302 val reports) otherwise contradicts the finding stated beside it, and radgen's
   labeler, like CheXpert's, reads it as no observation at all, so finding scores cannot see it;
5. opt-in (`all_clear="drop"` or `"reword"`; the default `"keep"` leaves it): where the head named a
   finding in `ALL_CLEAR_CONTRADICTED`, a sentence that clears the whole study ("no acute disease",
   "no active cardiopulmonary process", "normal chest") is dropped, or reworded as radiologists
   write it beside a finding ("no other acute disease"). IU's radiologists write one in 72% of the
   training reports of normal studies but in 0-22% of those with each of these findings (0% with
   consolidation or pneumonia, 8-9% with effusion or edema), against 43-53% of those with
   devices, a lung lesion (mostly granulomas) or a fracture (benchmarks/all_clear_rates.py). The
   labeler reads such a sentence as "No Finding", which the finding scores leave out, so they cannot
   see the contradiction. Neither
   variant is the default: on the val split dropping cost BLEU-4 0.006, METEOR 0.004 and ROUGE-L
   0.002, rewording BLEU-4 0.002, ROUGE-L 0.001 and CIDEr-D 0.011, each significant, findings
   unchanged (benchmarks/consistency_replay.py; docs/benchmarks.md, "Grounding", "'No acute
   disease' beside a finding").

Before these, with `drop_fragments` (default), fragments are dropped: sentences with no word of
three letters or more besides IU's anonymisation mark "xxxx" (an empty ".", "200 x 240 x .",
"no xxxx xxxx ."), and a last sentence with no closing period (cut off by the token limit). The
decoder writes them when the length floor (`generate.min_new_tokens`) keeps it going past what it
had to say: 20% of the shipped model's guided val reports had one, 11% ended mid-sentence. A report
with no whole sentence is left as written.

So the findings a report states are the head's. Statements about things the head does not cover
(the spine, a granuloma's calcification, comparisons) stay as the decoder wrote them, and so do
denials of findings the head did not name. A report left with no sentence becomes the plain
normal report (`radgen.labels.templates.NORMAL`). Every token of the final text
is then scored by the model (teacher-forced, from the first edited token on), so token log-probabilities and sentence
confidences describe the text actually returned. `GeneratedReport.edits` lists what changed.
`generate.consistent_findings: false` (or `generate(..., consistent_findings=False)`) returns the
decoder's own text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from radgen.labels.labeler import label_report
from radgen.labels.templates import NORMAL, TEMPLATES

PRESENT = (1, -1)
# observations of the lung parenchyma: naming one makes "the lungs are clear" a contradiction
LUNG_FINDINGS = ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")
_CLEAR_LUNGS = re.compile(r"\blungs (are|remain) clear\b")
# findings beside which a sentence clearing the whole study is a contradiction (rule 5)
ALL_CLEAR_CONTRADICTED = ("Cardiomegaly", "Lung Opacity", "Atelectasis", "Pleural Effusion", "Edema", "Consolidation", "Pneumonia",
                          "Pneumothorax")
_ALL_CLEAR = re.compile(r"\bno (evidence of )?(acute|active)( cardiopulmonary| pulmonary| cardiac| intrathoracic| chest)? "
                        r"(disease|abnormality|abnormalities|process|findings?)\b|\bnormal chest\b")
_ACUTE_WORD = re.compile(r"\bno (evidence of )?(acute|active)\b")
ALL_CLEAR_RULES = ("keep", "drop", "reword")
_WORD = re.compile(r"[^\W\d_]{3,}")  # three letters in a row, in any script


def clears_the_study(sentence: str) -> bool:
    """Whether `sentence` clears the whole study: "no acute disease", "no evidence of active
    cardiopulmonary process", "normal chest" (rule 5)."""
    return bool(_ALL_CLEAR.search(sentence))


def report_sentences(text: str) -> list[str]:
    """`text` cut after each word that ends in a period (cleaned reports write " ." as a word), words as written."""
    parts, current = [], []
    for word in text.split():
        current.append(word)
        if word == "." or word.endswith("."):
            parts.append(" ".join(current))
            current = []
    if current:
        parts.append(" ".join(current))
    return parts


def is_fragment(sentence: str, last: bool = False) -> bool:
    """No word of three letters or more besides "xxxx"; or, for a report's `last` sentence, no closing period."""
    return not _WORD.search(re.sub("xxxx", "", sentence, flags=re.IGNORECASE)) or (last and not sentence.rstrip().endswith("."))


def make_consistent(text: str, findings: Sequence[str], observations: Sequence[str] = (),
                    lung_wording: bool = True, drop_fragments: bool = True, all_clear: str = "keep") -> tuple[str, list[str]]:
    """(edited text, edits) so that `text` states every finding in `findings`, denies none of them, and
    states no other observation of `observations` (the head's list; empty: other findings are kept);
    with `lung_wording`, clear lungs become "otherwise clear" beside a named lung finding (rule 4);
    with `drop_fragments`, sentence fragments are dropped first (`is_fragment`); `all_clear` ("keep",
    "drop" or "reword"): what becomes of a sentence clearing the whole study beside a named finding
    of `ALL_CLEAR_CONTRADICTED` (rule 5)."""
    if all_clear not in ALL_CLEAR_RULES:
        raise ValueError(f"all_clear={all_clear!r}: use one of {', '.join(ALL_CLEAR_RULES)}")
    named = [name for name in findings if name in TEMPLATES]
    unnamed = [name for name in observations if name not in findings]
    edits: list[str] = []
    sentences = report_sentences(text)
    if drop_fragments:
        whole = [s for n, s in enumerate(sentences) if not is_fragment(s, last=n == len(sentences) - 1)]
        if whole and whole != sentences:  # a cleanup, not a rewrite: a report of fragments alone stays as written
            edits += [f"dropped fragment '{s}'" for s in sentences if s not in whole]
            sentences = whole
    kept: list[str] = []
    dropped_at: dict[str, int] = {}  # named finding -> where in `kept` the first dropped sentence on it stood
    contradicted = [name for name in findings if name in ALL_CLEAR_CONTRADICTED] if all_clear != "keep" else []
    for sentence in sentences:
        labels = label_report(sentence) if named or unnamed else {}
        denied = [name for name in named if labels.get(name) == 0]
        stated = [name for name in unnamed if labels.get(name) in PRESENT]
        if denied or stated:
            if denied:
                edits.append(f"dropped '{sentence}' (denies {', '.join(denied)})")
            else:
                edits.append(f"dropped '{sentence}' (states {', '.join(stated)}, which the image head did not find)")
            for name in named:
                if labels.get(name) is not None:  # it spoke of this named finding: its sentence may go here
                    dropped_at.setdefault(name, len(kept))
        elif contradicted and clears_the_study(sentence):
            if all_clear == "reword" and _ACUTE_WORD.search(sentence):
                reworded = _ACUTE_WORD.sub(lambda m: f"no {m.group(1) or ''}other {m.group(2)}", sentence, count=1)
                edits.append(f"reworded '{sentence}' to '{reworded}' (beside {', '.join(contradicted)})")
                kept.append(reworded)
            else:
                edits.append(f"dropped '{sentence}' (clears the study, beside {', '.join(contradicted)})")
        elif lung_wording and any(name in LUNG_FINDINGS for name in findings) and _CLEAR_LUNGS.search(sentence):
            reworded = _CLEAR_LUNGS.sub(r"lungs \1 otherwise clear", sentence, count=1)
            edits.append(f"reworded '{sentence}' to '{reworded}' (the image head named a lung finding)")
            kept.append(reworded)
        else:
            kept.append(sentence)
    remaining = " ".join(kept)
    stated = label_report(remaining) if remaining and named else {}
    added = [name for name in named if stated.get(name) not in PRESENT]
    for name in added:
        edits.append(f"added '{TEMPLATES[name]}' ({name})")
    placed = []  # each added sentence where the first dropped sentence on its finding stood, else at the end
    for index in range(len(kept) + 1):
        placed += [TEMPLATES[name] for name in added if dropped_at.get(name) == index]
        placed += kept[index:index + 1]
    placed += [TEMPLATES[name] for name in added if name not in dropped_at]
    edited = " ".join(placed).strip()
    if not edited and text.strip():
        edits.append(f"added '{NORMAL}' (no sentence was left)")
        edited = NORMAL
    return (edited, edits) if edits else (text, [])
