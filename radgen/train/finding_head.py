"""Fit a grounded model's finding head to convergence on frozen, cached encoder features.

Why a separate step: inside `radgen train` the head learns at the report decoder's pace (one
optimizer step per batch of 8 reports, about 2.5 s on the project's CPU), and a few epochs leave it
under-fitted (val mean AUROC 0.80 after 240 steps where a logistic-regression probe on the same
frozen features reaches 0.94-0.98 for the common signs). The decoder does not need the head while it
trains (its prompt names the true findings), so the head can be fitted afterwards on its own: with
the encoder frozen its inputs are the cached features, an epoch over 2,285 studies costs
milliseconds, and it trains until the validation loss stops improving. Thresholds are then set on
the validation split for best F1 per observation. The decoder, connector and encoder are untouched.
Defaults (lr 3e-4, weight decay 0.1, batch 64) were picked in an informal comparison on the IU-Phantom
val split (lr 1e-4..1e-3, weight decay 0.01..0.1); the settings tried differed little.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radgen.errors import ConfigError
from radgen.models.findings import targets_from_labels
from radgen.train.evaluation import study_finding_labels, tune_thresholds
from radgen.train.feature_cache import FeatureCache, encoder_identity, fill_cache

log = logging.getLogger(__name__)


@dataclass
class HeadFit:
    epochs: int
    best_epoch: int
    val_loss: float
    val_auroc: dict[str, float]  # per observation with positives in val
    val_micro_f1: float  # at the thresholds tuned on val (optimistic)
    thresholds: dict[str, float]


def _pooled_features(model: Any, dataset: Sequence[dict], cache_dir: str | Path, batch_size: int, progress: bool) -> torch.Tensor:
    cache = FeatureCache(cache_dir, encoder_identity(model), "float16")
    records, encoded = fill_cache(model, dataset, cache, batch_size, next(model.parameters()).device, None, progress)
    if encoded:
        log.info("feature cache %s: %d images encoded", cache.dir, encoded)
    pooled = []
    for start in range(0, len(records), 256):
        chunk = records[start:start + 256]
        features = cache.get([r["image_key"] for r in chunk])
        lateral = mask = None
        if model.findings.lateral:
            mask = torch.tensor([r.get("lateral_image_key") is not None for r in chunk])
            lateral = torch.zeros_like(features)
            if bool(mask.any()):
                lateral[mask] = cache.get([r["lateral_image_key"] for r in chunk if r.get("lateral_image_key") is not None]).to(lateral.dtype)
        pooled.append(model.findings.pool(features, lateral, mask))
    return torch.cat(pooled)


def fit_head_on_pooled(head: Any, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                       max_pos_weight: float = 10.0, max_epochs: int = 300, patience: int = 30, lr: float = 3e-4,
                       weight_decay: float = 0.1, batch_size: int = 64, seed: int = 0, lateral_dropout: float = 0.0) -> tuple[int, int, float]:
    """Train the head's norms and MLP on pooled features; keep the epoch with the lowest val BCE.
    A lateral head sees each training study's lateral hidden with probability `lateral_dropout`.
    Returns (epochs run, best epoch, best val loss). Thresholds are left to the caller."""
    head.set_class_balance(train_y, max_pos_weight)
    head.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best_loss, best_epoch, best_state, epoch = math.inf, 0, copy.deepcopy(head.state_dict()), 0
    for epoch in range(1, max_epochs + 1):
        head.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            rows = train_x[index]
            if getattr(head, "lateral", False):
                rows = head.hide_lateral(rows, lateral_dropout, generator)
            loss = head.loss(head.classify(rows), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            val_loss = float(head.loss(head.classify(val_x), val_y))
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(head.state_dict())
        elif epoch - best_epoch >= patience:
            break
    head.load_state_dict(best_state)
    head.requires_grad_(False)
    return epoch, best_epoch, best_loss


def fit_finding_head(model: Any, train_set: Sequence[dict], val_set: Sequence[dict], cache_dir: str | Path,
                     label_source: str = "auto", max_epochs: int = 300, patience: int = 30, lr: float = 3e-4,
                     weight_decay: float = 0.1, batch_size: int = 64, seed: int = 0, progress: bool = True) -> HeadFit:
    """Train only `model.findings` on cached encoder features of `train_set`; early-stop on the BCE of
    `val_set`; keep the best epoch's weights; tune thresholds on `val_set`. Returns what it measured."""
    head = getattr(model, "findings", None)
    if head is None:
        raise ConfigError(f"recipe '{model.recipe.name}' has no finding head to fit (model.findings.enabled=false)")
    if not val_set:
        raise ConfigError("fitting the finding head needs a validation split (early stopping and thresholds)")
    names = head.observations
    train_y = targets_from_labels(*study_finding_labels(train_set), names, label_source)[0]
    val_y = targets_from_labels(*study_finding_labels(val_set), names, label_source)[0]
    model.eval()
    with torch.no_grad():
        train_x = _pooled_features(model, train_set, cache_dir, batch_size, progress)
        val_x = _pooled_features(model, val_set, cache_dir, batch_size, progress)
    spec = model.recipe.model.findings
    epoch, best_epoch, best_loss = fit_head_on_pooled(head, train_x, train_y, val_x, val_y, spec.max_pos_weight,
                                                      max_epochs, patience, lr, weight_decay, batch_size, seed, spec.lateral_dropout)
    with torch.no_grad():
        micro_f1, aurocs = tune_thresholds(head, torch.sigmoid(head.classify(val_x)), val_y)
    aurocs = {name: round(value, 4) for name, value in aurocs.items()}
    fit = HeadFit(epoch, best_epoch, best_loss, aurocs, micro_f1, {n: round(float(t), 4) for n, t in zip(names, head.thresholds)})
    log.info("finding head: best val BCE %.4f at epoch %d of %d; val micro-F1 %.3f at tuned thresholds; val AUROC %s",
             best_loss, best_epoch, epoch, micro_f1, ", ".join(f"{n} {a:.3f}" for n, a in aurocs.items()))
    return fit
