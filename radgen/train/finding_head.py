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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from radgen.errors import ConfigError
from radgen.models.findings import combine_member_logits, head_members, targets_from_labels
from radgen.threads import rebalance_threads
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
    members: list[dict] = field(default_factory=list)  # a FindingEnsemble: each member's seed, epochs and val loss
    seed: int | None = None  # the first fitted member's


def _cached_head_inputs(model: Any, dataset: Sequence[dict], cache_dir: str | Path, batch_size: int,
                        progress: bool) -> tuple[FeatureCache, list[dict]]:
    """The head's inputs for every image of `dataset`, cached: encoder features, or for a head with
    its own encoder blocks the trunk maps that feed them (cached under their own identity)."""
    blocks = model.findings.tail_blocks
    size = model.head_image_size()  # the transform alone does not tell a head's size (a smaller head reads the encoder's images)
    identity = encoder_identity(model) + (f"-trunk{blocks}" if blocks else "") + (f"-{size}px" if size != model.encoder.image_size else "")
    cache = FeatureCache(cache_dir, identity, "float16")
    records, encoded = fill_cache(model, dataset, cache, batch_size, next(model.parameters()).device, None, progress,
                                  encode=model.head_input if blocks else None)
    if encoded:
        log.info("feature cache %s: %d images encoded", cache.dir, encoded)
    return cache, records


def _views(model: Any, cache: FeatureCache, records: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(frontal inputs, lateral inputs (zeros where absent) and presence mask; None without a lateral
    head), in float16 as cached: trunk maps are large."""
    front = cache.get([r["image_key"] for r in records]).half()
    if not model.findings.lateral:
        return front, None, None
    mask = torch.tensor([r.get("lateral_image_key") is not None for r in records])
    side = torch.zeros_like(front)
    if bool(mask.any()):
        side[mask] = cache.get([r["lateral_image_key"] for r in records if r.get("lateral_image_key") is not None]).half()
    return front, side, mask


def _pooled_features(model: Any, dataset: Sequence[dict], cache_dir: str | Path, batch_size: int, progress: bool) -> torch.Tensor:
    cache, records = _cached_head_inputs(model, dataset, cache_dir, batch_size, progress)
    head = head_members(model.findings)[0]  # the members pool alike without a tail
    # in chunks: the token features of every study at once would take GBs; their pools are small
    return torch.cat([head.pool(*_views(model, cache, records[start:start + 256]))
                      for start in range(0, len(records), 256)])


def _head_inputs(model: Any, dataset: Sequence[dict], cache_dir: str | Path, batch_size: int, progress: bool) -> Any:
    """What every member of `model.findings` reads for `dataset`: the cached views (`_views`) for a
    head with its own encoder blocks, else the pooled features (pooling has no parameters without
    encoder blocks, so one pool serves every member)."""
    if model.findings.tail_blocks:
        return _views(model, *_cached_head_inputs(model, dataset, cache_dir, 32, progress))
    return _pooled_features(model, dataset, cache_dir, batch_size, progress)


def _member_logits(member: Any, inputs: Any) -> torch.Tensor:
    """One member's logits on `_head_inputs`."""
    return head_logits(member, inputs) if member.tail_blocks else member.classify(inputs)


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
        rebalance_threads()
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


def _logits_of(head: Any, views: tuple, rows: torch.Tensor, lateral_mask: torch.Tensor | None = None) -> torch.Tensor:
    front, side, mask = views
    if side is None:
        return head(front[rows].float())
    return head(front[rows].float(), side[rows].float(), mask[rows] if lateral_mask is None else lateral_mask)


def head_logits(head: Any, views: tuple, chunk: int = 128) -> torch.Tensor:
    """A head-with-encoder-blocks' logits on cached views (as `_views` gives them), in eval mode, in
    chunks of `chunk` studies (the trunk maps of a whole split in fp32 would take GBs)."""
    head.eval()
    count = len(views[0])
    with torch.no_grad():
        return torch.cat([_logits_of(head, views, torch.arange(start, min(start + chunk, count)))
                          for start in range(0, count, chunk)])


def fit_head_with_tail(head: Any, train: tuple, train_y: torch.Tensor, val: tuple, val_y: torch.Tensor,
                       max_pos_weight: float = 10.0, max_epochs: int = 25, patience: int = 4, lr: float = 3e-4,
                       tail_lr: float = 1e-4, weight_decay: float = 0.1, batch_size: int = 32, seed: int = 0,
                       lateral_dropout: float = 0.0, progress: bool = True,
                       label: str = "finding head + encoder blocks") -> tuple[int, int, float, torch.Tensor]:
    """Train a head that has its own encoder blocks (`head.tail`) on cached trunk maps.

    `train` / `val`: (frontal maps, lateral maps or None, lateral mask or None). Unlike the pooled fit,
    every epoch runs the tail over every image (about a minute an epoch for 2,300 studies with two
    views on 2 CPU cores), hence fewer epochs and a shorter patience; the tail learns at `tail_lr`,
    below the head's `lr`, because it starts from trained weights. Returns (epochs run, best epoch,
    best val loss, val logits of the best epoch)."""
    from tqdm.auto import tqdm

    head.set_class_balance(train_y, max_pos_weight)
    head.requires_grad_(True)
    tail_params = list(head.tail.parameters())
    tail_ids = {id(p) for p in tail_params}
    optimizer = torch.optim.AdamW([{"params": [p for p in head.parameters() if id(p) not in tail_ids], "lr": lr},
                                   {"params": tail_params, "lr": tail_lr}], weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    front, side, mask = train

    def val_logits() -> torch.Tensor:
        return head_logits(head, val)

    best_loss, best_epoch, best_state, best_logits, epoch = math.inf, 0, copy.deepcopy(head.state_dict()), None, 0
    bar = tqdm(total=max_epochs, desc=label, unit="epoch", disable=not progress, leave=False)
    for epoch in range(1, max_epochs + 1):
        head.train()
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            kept = None
            if mask is not None:  # see FindingHead: some studies train without their lateral
                kept = mask[rows] & (torch.rand(len(rows), generator=generator) >= lateral_dropout)
            loss = head.loss(_logits_of(head, train, rows, kept), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rebalance_threads()
        logits = val_logits()
        val_loss = float(head.loss(logits, val_y))
        bar.update(1)
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, best_state, best_logits = val_loss, epoch, copy.deepcopy(head.state_dict()), logits
        elif epoch - best_epoch >= patience:
            break
    bar.close()
    head.load_state_dict(best_state)
    head.requires_grad_(False)
    head.eval()
    return epoch, best_epoch, best_loss, best_logits if best_logits is not None else val_logits()


def fit_finding_head(model: Any, train_set: Sequence[dict], val_set: Sequence[dict], cache_dir: str | Path,
                     label_source: str = "auto", max_epochs: int | None = None, patience: int | None = None, lr: float = 3e-4,
                     weight_decay: float = 0.1, batch_size: int = 64, seed: int = 0, progress: bool = True,
                     tail_lr: float = 1e-4, keep: int = 0) -> HeadFit:
    """Train only `model.findings` on cached inputs of `train_set`; early-stop on the BCE of `val_set`;
    keep the best epoch's weights; tune thresholds on `val_set`. Returns what it measured.

    A plain head trains on pooled encoder features (defaults: 300 epochs, patience 30); a head with
    its own encoder blocks (model.findings.tune_encoder_blocks) on trunk maps, with them
    (`fit_head_with_tail`; defaults: 25 epochs, patience 4, batch 32). A FindingEnsemble's members
    are fitted one after the other, member i from seed `seed + i`, each on its own; the thresholds
    are then tuned on their mean probability. The HeadFit's epochs and loss are the last member's
    and the mean of the members' best val losses; `members` lists each.

    `keep`: the ensemble's first `keep` members are fitted already (`radgen fit-findings
    --add-members`): they are left as they are and only their val probabilities join the mean; the
    others are fitted from seeds `seed`, `seed + 1`, ... ."""
    head = getattr(model, "findings", None)
    if head is None:
        raise ConfigError(f"recipe '{model.recipe.name}' has no finding head to fit (model.findings.enabled=false)")
    if not val_set:
        raise ConfigError("fitting the finding head needs a validation split (early stopping and thresholds)")
    names = head.observations
    train_y = targets_from_labels(*study_finding_labels(train_set), names, label_source)[0]
    val_y = targets_from_labels(*study_finding_labels(val_set), names, label_source)[0]
    model.eval()
    spec = model.recipe.model.findings
    members = head_members(head)
    if not 0 <= keep < len(members):
        raise ConfigError(f"keep={keep}: a head of {len(members)} members must have at least one member to fit")
    with torch.no_grad():
        train_inputs = _head_inputs(model, train_set, cache_dir, batch_size, progress)
        val_inputs = _head_inputs(model, val_set, cache_dir, batch_size, progress)
    fits, member_logits = [], []
    for index, member in enumerate(members):
        if index < keep:
            with torch.no_grad():
                logits = _member_logits(member, val_inputs)
                probs = torch.sigmoid(logits.float())
                member_logits.append(logits)
                fits.append({"kept": True, "val_loss": float(member.loss(logits, val_y)),
                             "val_micro_f1": round(tune_thresholds(member, probs, val_y)[0], 4)})
            continue
        member_seed = seed + index - keep
        resume = getattr(member, "rng_after_init", None)  # see build_finding_head(seed=...)
        with torch.random.fork_rng(devices=[], enabled=resume is not None):
            if resume is not None:
                torch.set_rng_state(resume)
            if head.tail_blocks:
                epoch, best_epoch, best_loss, val_logits = fit_head_with_tail(
                    member, train_inputs, train_y, val_inputs, val_y, spec.max_pos_weight, max_epochs or 25, patience or 4, lr,
                    tail_lr, weight_decay, 32, member_seed, spec.lateral_dropout, progress,
                    f"finding head{f' member {index + 1}/{len(members)}' if len(members) > 1 else ''} + encoder blocks")
            else:
                epoch, best_epoch, best_loss = fit_head_on_pooled(member, train_inputs, train_y, val_inputs, val_y, spec.max_pos_weight,
                                                                  max_epochs or 300, patience or 30, lr, weight_decay, batch_size,
                                                                  member_seed, spec.lateral_dropout)
                with torch.no_grad():
                    val_logits = member.classify(val_inputs)
        with torch.no_grad():
            probs = torch.sigmoid(val_logits.float())
            member_f1 = tune_thresholds(member, probs, val_y)[0] if len(members) > 1 else None
        member_logits.append(val_logits)
        fits.append({"seed": member_seed, "epochs": epoch, "best_epoch": best_epoch, "val_loss": best_loss,
                     **({"val_micro_f1": round(member_f1, 4)} if member_f1 is not None else {})})
        if len(members) > 1:
            log.info("finding head member %d of %d: best val BCE %.4f at epoch %d of %d; val micro-F1 %.3f", index + 1,
                     len(members), best_loss, best_epoch, epoch, member_f1)
    with torch.no_grad():
        micro_f1, aurocs = tune_thresholds(head, torch.sigmoid(combine_member_logits(head, member_logits)), val_y)
    aurocs = {name: round(value, 4) for name, value in aurocs.items()}
    loss = sum(f["val_loss"] for f in fits) / len(fits)
    fit = HeadFit(fits[-1]["epochs"], fits[-1]["best_epoch"], loss, aurocs, micro_f1,
                  {n: round(float(t), 4) for n, t in zip(names, head.thresholds)}, fits if len(fits) > 1 else [], seed)
    log.info("finding head: best val BCE %.4f at epoch %d of %d; val micro-F1 %.3f at tuned thresholds; val AUROC %s",
             loss, fit.best_epoch, fit.epochs, micro_f1, ", ".join(f"{n} {a:.3f}" for n, a in aurocs.items()))
    return fit


def retune_thresholds(model: Any, val_set: Sequence[dict], cache_dir: str | Path, label_source: str = "auto",
                      progress: bool = True) -> tuple[float, dict[str, float]]:
    """Tune `model.findings`' per-observation thresholds on `val_set` (best F1, as a fit tunes them)
    without changing its weights: for another validation set (a site's own studies), or after the
    threshold rule changed (`radgen fit-findings --thresholds-only`). Returns the micro-F1 there at
    the new thresholds (optimistic: tuned on the same studies) and them, by observation."""
    head = getattr(model, "findings", None)
    if head is None:
        raise ConfigError(f"recipe '{model.recipe.name}' has no finding head (model.findings.enabled=false)")
    if not val_set:
        raise ConfigError("tuning the finding head's thresholds needs a validation split")
    val_y = targets_from_labels(*study_finding_labels(val_set), head.observations, label_source)[0]
    model.eval()
    with torch.no_grad():
        inputs = _head_inputs(model, val_set, cache_dir, 64, progress)
        probs = torch.sigmoid(combine_member_logits(head, [_member_logits(member, inputs) for member in head_members(head)]))
        micro_f1 = tune_thresholds(head, probs, val_y)[0]
    return micro_f1, {n: round(float(t), 4) for n, t in zip(head.observations, head.thresholds)}
