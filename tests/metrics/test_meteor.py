"""METEOR 1.5: our batch wrapper must equal pycocoevalcap's interactive wrapper (same jar).

Each JVM start loads METEOR's paraphrase tables (seconds), so everything runs in two sessions.
"""

import numpy as np
import pytest

from radgen.metrics.meteor import MeteorScorer, java_available
from tests.metrics._reports import report_pairs

pytestmark = pytest.mark.skipif(not java_available(), reason="METEOR 1.5 needs Java")


def test_matches_pycocoevalcap_sums_resamples_and_handles_empty_hypothesis():
    from pycocoevalcap.meteor.meteor import Meteor

    hyps, refs = report_pairs(60, seed=4)
    hyps[5] = refs[5]  # a perfect match: its chunk is not aggregated by the jar
    hyps[0] = ""  # empty hypothesis
    hyps += hyps[1:9]  # repeated pairs: the jar scores each distinct pair once, the corpus still counts every study
    refs += refs[1:9]
    coco = Meteor()
    try:
        corpus, each = coco.compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    finally:
        del coco
    with MeteorScorer() as meteor:
        ours = meteor.score(hyps, refs)
        idx = np.array([5, 5, 5, 1, 2, 0, 7, 7])
        sub = meteor.score([hyps[i] for i in idx], [refs[i] for i in idx])
        resampled = meteor.corpus_from_summed(np.stack([ours.stats.sum(0), ours.stats[idx].sum(0)]))
    assert ours.corpus == pytest.approx(corpus, abs=1e-9)
    np.testing.assert_allclose(ours.per_study, each, atol=1e-9)
    assert ours.per_study[0] == 0.0 and ours.per_study[5] == pytest.approx(1.0, abs=0.01)
    assert resampled[0] == pytest.approx(ours.corpus, abs=1e-9)
    assert resampled[1] == pytest.approx(sub.corpus, abs=1e-9)
