"""Findings-consistent reports: a grounded model's text must state the findings its prompt named.

Why: radgen-small's decoder, trained with the true findings in its prompt, learned them only weakly
(benchmarks/prompt_reliance.py on the shipped model: teacher-forced loss 0.087 nats/token lower with
the true prompt than with "none"; greedy text states cardiomegaly, effusion or devices in 0 of 16
studies whose prompt names them), because the normal template the IU reports are full of dominates.
So the report is edited, in the open:

1. each sentence the labeler reads as *denying* a finding the head named is dropped;
2. each named finding the remaining text does not state (labeler: present or uncertain) gets its
   plain sentence (radgen.labels.templates) at the start of the report.

Findings the head did not name are left as the decoder wrote them. Every token of the final text
is then scored by the model (one teacher-forced pass), so token log-probabilities and sentence
confidences describe the text actually returned. `GeneratedReport.edits` lists what changed.
`generate.consistent_findings: false` (or `generate(..., consistent_findings=False)`) returns the
decoder's own text.
"""

from __future__ import annotations

from collections.abc import Sequence

from radgen.labels.labeler import label_report
from radgen.labels.templates import TEMPLATES

PRESENT = (1, -1)


def _sentences(text: str) -> list[str]:
    parts, current = [], []
    for word in text.split():
        current.append(word)
        if word == "." or word.endswith("."):
            parts.append(" ".join(current))
            current = []
    if current:
        parts.append(" ".join(current))
    return parts


def make_consistent(text: str, findings: Sequence[str]) -> tuple[str, list[str]]:
    """(edited text, edits) so that `text` states every finding in `findings` and denies none of them."""
    named = [name for name in findings if name in TEMPLATES]
    if not named:
        return text, []
    edits: list[str] = []
    kept = []
    for sentence in _sentences(text):
        labels = label_report(sentence)
        denied = [name for name in named if labels.get(name) == 0]
        if denied:
            edits.append(f"dropped '{sentence}' (denies {', '.join(denied)})")
        else:
            kept.append(sentence)
    remaining = " ".join(kept)
    stated = label_report(remaining) if remaining else {}
    added = [name for name in named if stated.get(name) not in PRESENT]
    for name in added:
        edits.append(f"added '{TEMPLATES[name]}' ({name})")
    return " ".join([TEMPLATES[name] for name in added] + kept).strip(), edits
