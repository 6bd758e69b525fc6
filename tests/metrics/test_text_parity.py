"""BLEU / ROUGE-L / CIDEr-D must equal pycocoevalcap 1.2 (the independent reference) on the same inputs."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radgen.metrics.text import lcs_length, text_metrics
from tests.metrics._reports import report_pairs

pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402


def _coco(hyps, refs):
    gts = {i: (r if isinstance(r, list) else [r]) for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    return bleu, bleu_each, rouge, rouge_each, cider, cider_each


def _assert_equal(hyps, refs):
    bleu, bleu_each, rouge, rouge_each, cider, cider_each = _coco(hyps, refs)
    ours = text_metrics(hyps, refs)
    for k in range(4):
        assert ours.corpus[f"bleu{k + 1}"] == pytest.approx(bleu[k], abs=1e-6)
        np.testing.assert_allclose(ours.per_study[f"bleu{k + 1}"], bleu_each[k], atol=1e-6)
    assert ours.corpus["rouge_l"] == pytest.approx(rouge, abs=1e-6)
    np.testing.assert_allclose(ours.per_study["rouge_l"], rouge_each, atol=1e-6)
    assert ours.corpus["cider_d"] == pytest.approx(cider, abs=1e-6)
    np.testing.assert_allclose(ours.per_study["cider_d"], cider_each, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_single_reference(seed):
    hyps, refs = report_pairs(300, seed=seed)
    _assert_equal(hyps, refs)


def test_parity_multiple_references_and_short_hypotheses():
    rng = random.Random(7)
    hyps, refs = report_pairs(200, seed=7)
    multi = [[r] + [report_pairs(1, seed=rng.randrange(10**6))[1][0] for _ in range(rng.randint(0, 3))] for r in refs]
    hyps[3] = "heart"  # one token: no bigrams
    hyps[4] = "the heart is normal in size ."
    hyps[5], multi[5] = "normal", ["normal"]  # a one-token reference: no bigrams on either side
    _assert_equal(hyps, multi)


def test_parity_empty_hypothesis():
    hyps, refs = report_pairs(50, seed=3)
    hyps[0] = ""
    _assert_equal(hyps, refs)


def test_identical_corpus_scores_one_and_empty_corpus_rejected():
    _, refs = report_pairs(40, seed=5)
    scores = text_metrics(refs, refs).corpus
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="^no studies to score$"):
        text_metrics([], [])
    with pytest.raises(ValueError, match="^2 hypotheses but 1 references$"):
        text_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="^every study needs at least one reference$"):
        text_metrics(["a"], [[]])


def _lcs_table(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(11)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 80))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 80))]
        assert lcs_length(a, b) == _lcs_table(a, b)


def test_cider_d_is_the_same_to_the_bit_whatever_the_hash_seed():
    # a set's iteration order follows the process's hash seed; a sum taken in that order changes its
    # last bit between runs, and a rerun of an evaluation must give the same numbers
    code = ("from radgen.metrics.text import text_metrics; from tests.metrics._reports import report_pairs; "
            "print(repr(text_metrics(*report_pairs(300, seed=3), metrics=('cider_d',)).per_study['cider_d'].tolist()))")
    root = Path(__file__).resolve().parents[2]
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": str(seed)}).stdout
               for seed in range(1, 5)}
    assert len(outputs) == 1
