"""Is the phantom's signal learnable but not trivial? Tools for benchmarks/phantom_learnability.py.

* `rank_auroc`: AUROC by the Mann-Whitney rank formula (ties get average ranks), so the benchmark
  needs no scikit-learn.
* `global_statistics`: per-image summary features (mean, spread, percentiles, histogram) for the
  "could a model read the answer from a global statistic?" baseline, fitted with
  `fit_logistic_regression` (numpy Newton/IRLS).
* `SmallCNN`: a few strided convolutions over the stacked PA + lateral views.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def rank_auroc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative).

    Computed as (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg) with average ranks
    for ties (ties count one half). Returns NaN when a class is absent.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0  # average 1-based rank of the tie group
        start = end + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def global_statistics(image: np.ndarray, bins: int = 16) -> np.ndarray:
    """Mean, std, 5/25/50/75/95th percentiles and a normalized histogram of one 8-bit image."""
    pixels = image.astype(np.float32).ravel() / 255.0
    percentiles = np.percentile(pixels, [5, 25, 50, 75, 95])
    histogram = np.histogram(pixels, bins=bins, range=(0.0, 1.0))[0] / pixels.size
    return np.concatenate([[pixels.mean(), pixels.std()], percentiles, histogram]).astype(np.float32)


def fit_logistic_regression(features: np.ndarray, targets: np.ndarray, l2: float = 1e-2, steps: int = 25):
    """One-vs-rest L2 logistic regression by Newton's method on standardized features.

    Plain numpy (a few dozen features): exact and fast, no optimizer state. Returns predict(x)
    giving probabilities, one column per target column.
    """
    x = np.asarray(features, dtype=np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    design = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    y = np.asarray(targets, dtype=np.float64)
    penalty = l2 * len(x) * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # no penalty on the intercept
    weights = np.zeros((design.shape[1], y.shape[1]))
    for j in range(y.shape[1]):
        w = weights[:, j]
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -30, 30)))
            gradient = design.T @ (p - y[:, j]) + penalty @ w
            hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty
            step = np.linalg.solve(hessian, gradient)
            w = w - step
            if np.abs(step).max() < 1e-8:
                break
        weights[:, j] = w

    def predict(new_features: np.ndarray) -> np.ndarray:
        z = np.hstack([(np.asarray(new_features, dtype=np.float64) - mean) / std, np.ones((len(new_features), 1))])
        return 1.0 / (1.0 + np.exp(-np.clip(z @ weights, -30, 30)))

    return predict


class SmallCNN(nn.Module):
    """Four strided conv blocks → global average pool → one logit per label."""

    def __init__(self, in_channels: int, num_labels: int, width: int = 24):
        super().__init__()
        layers, channels = [], in_channels
        for k in range(5):
            out = width * 2 ** min(k, 3)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))
