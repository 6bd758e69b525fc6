"""Image-free baselines: what a metric gives for reports chosen from the training set alone.

They set the floor every model must beat (on IU X-Ray, "copy the most common normal report" scores a
BLEU-4 that looks respectable) and check the evaluation pipeline end to end.

* ``most-frequent``: the single most frequent training report text of the section, for every study.
* ``random-train``: a uniformly random training report per test study (seeded).

Candidates are the training studies whose section (findings / impression) is non-empty.
* ``nearest-train``: the report of the training study whose *indication* text is most similar to the
  test study's indication (TF-IDF cosine over lower-cased word unigrams, smoothed idf). No image is
  used: this measures how much the clinical question alone predicts the report. A test study without
  indication text, or with no training indication sharing a word, gets the most frequent report.
* ``consensus-train``: among the `pool` training reports with the nearest indications, the one most
  like the others (summed 1-4-gram TF-IDF cosine; radgen.data.retrieval.NgramIndex), copied whole;
  retrieval-guided decoding with `generate.guide_pool` picks its guide the same way, over each
  report's vouched sentences (radgen.models.memory).
"""

from __future__ import annotations

import random
from collections import Counter

from radgen.data.retrieval import NgramIndex, TfidfIndex
from radgen.data.study import Study
from radgen.errors import DataError

KINDS = ("most-frequent", "random-train", "nearest-train", "consensus-train")


def baseline_predictions(studies: list[Study], kind: str, section: str = "findings", train_split: str = "train", test_split: str = "test", seed: int = 0,
                         pool: int = 40) -> list[dict]:
    """Prediction rows {"study_id", "findings", "impression", "baseline", "source_study_id"} for the test split."""
    if kind not in KINDS:
        raise DataError(f"unknown baseline kind {kind!r}; use one of {', '.join(KINDS)}")
    train = [s for s in studies if s.split == train_split and (s.findings or s.impression)]
    test = [s for s in studies if s.split == test_split]
    if not train or not test:
        raise DataError(f"baselines need studies with split {train_split!r} and {test_split!r} in the manifest (found {len(train)} and {len(test)})")

    def key(study: Study) -> str:
        return study.report(section).strip()

    with_text = [s for s in train if key(s)]  # only reports that have the section are candidates
    if not with_text:
        raise DataError(f"no {train_split!r} study has a non-empty {section!r} section; baselines copy training reports of that section")
    counts = Counter(key(s) for s in with_text)
    most_common_text = counts.most_common(1)[0][0]
    most_frequent = next(s for s in with_text if key(s) == most_common_text)
    rng = random.Random(seed)
    chosen: list[Study]
    if kind == "most-frequent":
        chosen = [most_frequent] * len(test)
    elif kind == "random-train":
        chosen = [rng.choice(with_text) for _ in test]
    elif kind == "nearest-train":
        index = TfidfIndex([s.sections.get("indication", "") for s in with_text])
        nearest = [index.nearest(t.sections.get("indication", "")) for t in test]
        chosen = [with_text[i] if i is not None else most_frequent for i in nearest]
    else:
        index = TfidfIndex([s.sections.get("indication", "") for s in with_text])
        reports = NgramIndex([key(s) for s in with_text])
        pools = [index.nearest_k(t.sections.get("indication", ""), pool) for t in test]
        chosen = [with_text[reports.consensus(p)] if p else most_frequent for p in pools]
    return [
        {"study_id": t.study_id, "findings": c.findings, "impression": c.impression, "baseline": kind, "source_study_id": c.study_id}
        for t, c in zip(test, chosen)
    ]
