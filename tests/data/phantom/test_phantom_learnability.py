"""AUROC by ranks against hand-worked examples; statistics and the small CNN's shapes."""

from __future__ import annotations

import math

import numpy as np
import torch

from radgen.data.phantom.learnability import SmallCNN, fit_logistic_regression, global_statistics, rank_auroc


def test_rank_auroc_hand_worked_example():
    # Positives score 0.9, 0.4, 0.35; negatives 0.8, 0.3, 0.1.
    # Pairs (pos > neg): 0.9 beats all 3; 0.4 beats 0.3 and 0.1; 0.35 beats 0.3 and 0.1 → 7 of 9.
    scores = [0.9, 0.8, 0.4, 0.35, 0.3, 0.1]
    labels = [1, 0, 1, 1, 0, 0]
    assert math.isclose(rank_auroc(scores, labels), 7 / 9)


def test_rank_auroc_ties_count_half_and_degenerate_cases():
    # Positive 0.5 ties negative 0.5 (½) and beats 0.2 (1); positive 0.7 beats both (2) → 3.5 / 4.
    assert math.isclose(rank_auroc([0.5, 0.7, 0.5, 0.2], [1, 1, 0, 0]), 3.5 / 4)
    assert rank_auroc([0.1, 0.2, 0.3], [0, 1, 1]) == 1.0
    assert rank_auroc([0.3, 0.2, 0.1], [0, 1, 1]) == 0.0
    assert math.isnan(rank_auroc([0.1, 0.2], [1, 1]))


def test_rank_auroc_matches_pairwise_count_on_random_data():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 10, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert math.isclose(rank_auroc(scores, labels), pairwise)


def test_logistic_regression_matches_a_known_separable_direction():
    # Labels are exactly sign(x0 - x1): the fitted model must rank by x0 - x1 and ignore x2.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)[:, None]
    predict = fit_logistic_regression(x[:150], y[:150])
    assert rank_auroc(predict(x[150:])[:, 0], y[150:, 0]) > 0.99
    probe = predict(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))[:, 0]
    assert probe[0] > 0.9 and probe[1] < 0.1 and abs(probe[2] - 0.5) < 0.2


def test_statistics_and_logistic_regression_learn_a_global_signal():
    rng = np.random.default_rng(1)
    bright = rng.random(80) < 0.5
    images = [np.clip(rng.normal(150 if b else 100, 20, (16, 16)), 0, 255).astype(np.uint8) for b in bright]
    features = np.stack([global_statistics(im) for im in images])
    predict = fit_logistic_regression(features[:60], bright[:60, None].astype(np.float32))
    assert rank_auroc(predict(features[60:])[:, 0], bright[60:]) > 0.95


def test_small_cnn_shapes():
    model = SmallCNN(in_channels=2, num_labels=5, width=8)
    assert model(torch.zeros(3, 2, 64, 64)).shape == (3, 5)
