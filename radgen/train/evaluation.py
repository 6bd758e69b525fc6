"""Validation during training: mean val loss and a quick BLEU-4 / ROUGE-L on a few generated reports.

The text metric is a sanity signal (does the model produce reports at all?), computed on
`train.eval_generate` studies with the recipe's decoding settings; the full, protocol-exact
evaluation is `radgen evaluate` on a predictions file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from radgen.data.dataset import lateral_inputs
from radgen.train.data import eval_batches

log = logging.getLogger(__name__)


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    dataset: Sequence[dict],
    collate: Callable[[list[dict]], dict],
    to_inputs: Callable[[dict], dict[str, Any]],
    batch_size: int,
    max_batches: int | None,
    accelerator: Any,
) -> float:
    """Mean of per-batch token-mean losses, weighted by batch size, over all processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for indices in eval_batches(len(dataset), batch_size, max_batches, accelerator.num_processes, accelerator.process_index):
        batch = collate([dataset[i] for i in indices])
        with accelerator.autocast():
            loss = model(**to_inputs(batch)).loss
        total[0] += loss.double() * len(indices)
        total[1] += len(indices)
    total = accelerator.reduce(total, reduction="sum") if accelerator.num_processes > 1 else total
    model.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else math.nan


def study_finding_labels(dataset: Sequence[dict]) -> tuple[list[dict | None], list[str]]:
    """Each example's manifest CheXpert labels and report text, without decoding images."""
    if hasattr(dataset, "studies") and hasattr(dataset, "report"):  # StudyDataset
        return [s.labels.get("chexpert") for s in dataset.studies], [dataset.report(i) for i in range(len(dataset))]
    if hasattr(dataset, "records"):  # CachedFeatures
        return [r.get("finding_labels") for r in dataset.records], [r["report"] for r in dataset.records]
    items = [dataset[i] for i in range(len(dataset))]
    return [item.get("finding_labels") for item in items], [item["report"] for item in items]


@torch.no_grad()
def calibrate_finding_head(model: torch.nn.Module, dataset: Sequence[dict], collate: Callable[[list[dict]], dict],
                           targets: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, float]:
    """Set the finding head's per-observation thresholds for best F1 on `dataset` (validation) and
    return its micro-F1 there (optimistic: tuned on the same studies) and mean AUROC."""
    was_training = model.training
    model.eval()
    logits = []
    for indices in eval_batches(len(dataset), batch_size):
        batch = collate([dataset[i] for i in indices])
        visual = {"image_features": batch["image_features"]} if "image_features" in batch else {"pixel_values": batch["pixel_values"]}
        head_input = model.features_and_head_input(**{k: v.to(device) for k, v in visual.items()})[1]
        logits.append(model.finding_logits(head_input, **lateral_inputs(batch, device)).float().cpu())
    model.train(was_training)
    micro_f1, aurocs = tune_thresholds(model.findings, torch.sigmoid(torch.cat(logits)), targets)
    return {"val_finding_micro_f1": micro_f1, "val_finding_auroc": sum(aurocs.values()) / len(aurocs) if aurocs else math.nan}


def tune_thresholds(head: torch.nn.Module, probs: torch.Tensor, targets: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Set the head's per-observation thresholds for best F1 on (probs, targets); return the micro-F1
    there (optimistic: tuned on the same studies) and the AUROC of each observation with both classes."""
    head.set_thresholds(probs, targets)
    predicted, truth = probs >= head.thresholds, targets.bool()
    micro_f1 = 2 * float((predicted & truth).sum()) / max(float(predicted.sum() + truth.sum()), 1.0)
    aurocs = {name: _auroc(probs[:, k], truth[:, k]) for k, name in enumerate(head.observations)
              if 0 < int(truth[:, k].sum()) < len(truth)}
    return micro_f1, aurocs


def _auroc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Mann-Whitney AUROC (ties count half)."""
    pos, neg = scores[truth], scores[~truth]
    greater = (pos[:, None] > neg[None, :]).float().sum() + 0.5 * (pos[:, None] == neg[None, :]).float().sum()
    return float(greater / (len(pos) * len(neg)))


@torch.no_grad()
def generation_scores(
    model: torch.nn.Module,
    dataset: Sequence[dict],
    collate: Callable[[list[dict]], dict],
    count: int,
    generate_kwargs: dict[str, Any],
    device: torch.device,
    batch_size: int = 8,
) -> dict[str, float]:
    """BLEU-4 and ROUGE-L (radgen.metrics, pycocoevalcap-equivalent) on the first `count` val studies."""
    try:
        from radgen.metrics.text import text_metrics
    except ImportError:  # metrics package not installed in this build: val loss only
        return {}
    count = min(count, len(dataset))
    if count <= 0:
        return {}
    was_training = model.training
    model.eval()
    hypotheses, references = [], []
    for start in range(0, count, batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, count))])
        visual = {"image_features": batch["image_features"].to(device)} if "image_features" in batch else {"pixel_values": batch["pixel_values"].to(device)}
        outputs = model.generate(**visual, contexts=batch.get("contexts"), **lateral_inputs(batch, device), **generate_kwargs)
        hypotheses += [out.text for out in outputs]
        references += list(batch["reports"])
    model.train(was_training)
    # an empty hypothesis is a legitimate (bad) output early in training; score it as such
    scores = text_metrics([h if h.strip() else "<empty>" for h in hypotheses], references, metrics=("bleu", "rouge_l")).corpus
    return {"bleu4": scores["bleu4"], "rouge_l": scores["rouge_l"], "sample_report": hypotheses[0] if hypotheses else ""}
