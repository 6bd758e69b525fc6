"""Synthetic radiology report pairs for metric tests (tests never read /work/shared)."""

from __future__ import annotations

import random

SENTENCES = [
    "the heart is normal in size",
    "the cardiomediastinal silhouette is within normal limits",
    "heart size is mildly enlarged",
    "the lungs are clear bilaterally",
    "no focal consolidation pleural effusion or pneumothorax",
    "there is no pneumothorax",
    "small left pleural effusion",
    "there are no xxxx of a pleural effusion",
    "mild bibasilar atelectasis",
    "calcified granuloma in the right upper lobe",
    "degenerative changes of the thoracic spine",
    "stable appearance of sternotomy wires",
    "right internal jugular central venous catheter tip in the svc",
    "no acute cardiopulmonary abnormality",
    "pulmonary vascularity is within normal limits",
    "interstitial edema is noted",
    "patchy opacity in the left lower lobe concerning for pneumonia",
    "no acute bony abnormality",
    "there is a healed rib fracture on the right",
    "the mediastinum is widened",
]
VOCAB = sorted({w for s in SENTENCES for w in s.split()}) + ["xxxx", "unchanged", "prior", "left", "right"]


def random_report(rng: random.Random, max_sentences: int = 6) -> str:
    chosen = rng.sample(SENTENCES, rng.randint(1, max_sentences))
    return " . ".join(chosen) + " ."


def edit(rng: random.Random, report: str) -> str:
    """Random word-level edits: deletions, substitutions, insertions, sentence drops and swaps."""
    words = report.split()
    for _ in range(rng.randint(0, 8)):
        op = rng.random()
        if op < 0.3 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif op < 0.6 and words:
            words[rng.randrange(len(words))] = rng.choice(VOCAB)
        elif op < 0.8:
            words.insert(rng.randrange(len(words) + 1), rng.choice(VOCAB))
        elif words:
            i, j = rng.randrange(len(words)), rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
    if rng.random() < 0.2:
        words = words + random_report(rng, 2).split()
    return " ".join(words)


def report_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs = [random_report(rng) for _ in range(n)]
    hyps = []
    for ref in refs:
        r = rng.random()
        if r < 0.1:
            hyps.append(ref)  # exact copy
        elif r < 0.2:
            hyps.append(random_report(rng))  # unrelated report
        elif r < 0.23:
            hyps.append(rng.choice(SENTENCES))  # very short
        else:
            hyps.append(edit(rng, ref))
    return hyps, refs
