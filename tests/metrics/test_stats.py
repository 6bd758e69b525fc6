"""Bootstrap by summed statistics must equal recomputing the metric on each resample."""

import numpy as np
import pytest

from radgen.metrics import stats
from radgen.metrics.text import bleu_from_totals, text_metrics
from tests.metrics._reports import report_pairs


def test_resample_weights_are_multinomial_counts():
    w = stats.resample_weights(50, 200, seed=1)
    assert w.shape == (200, 50) and np.all(w.sum(1) == 50) and np.all(w >= 0)
    assert abs(w.mean() - 1.0) < 0.05


def test_summed_bleu_statistics_equal_recomputed_resamples():
    hyps, refs = report_pairs(60, seed=2)
    scores = text_metrics(hyps, refs)
    s = scores.bleu_stats
    matrix = np.concatenate([s.correct, s.guess, s.testlen[:, None], s.reflen[:, None]], axis=1).astype(float)
    rng = np.random.default_rng(3)
    for _ in range(5):
        idx = rng.integers(0, 60, 60)
        weights = np.bincount(idx, minlength=60).astype(float)
        summed = weights @ matrix
        fast = bleu_from_totals(summed[0:4], summed[4:8], summed[8], summed[9])
        slow = text_metrics([hyps[i] for i in idx], [refs[i] for i in idx], ("bleu",)).corpus
        for k in range(4):
            assert fast[k] == pytest.approx(slow[f"bleu{k + 1}"], abs=1e-12)


def test_bootstrap_interval_of_a_mean_matches_a_naive_loop():
    values = np.random.default_rng(0).normal(size=80)
    ci = stats.bootstrap([stats.mean_statistic("x", values)], n_resamples=500, seed=7)["x"]
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 80, size=(500, 80))
    naive = np.quantile(values[draws].mean(1), [0.025, 0.975])
    assert ci == pytest.approx(tuple(naive), abs=1e-12)
    assert ci[0] < values.mean() < ci[1]


def test_paired_test_identical_and_different_systems():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=300)
    same = stats.paired_test([stats.mean_statistic("m", a)], [stats.mean_statistic("m", a)], n_resamples=300)["m"]
    assert same.delta == 0 and same.p_value == 1.0
    better = stats.paired_test([stats.mean_statistic("m", a)], [stats.mean_statistic("m", a + 0.1)], n_resamples=300)["m"]
    assert better.delta == pytest.approx(0.1) and better.p_value < 0.01 and better.ci[0] > 0
