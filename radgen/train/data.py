"""Which examples each process sees at each optimizer step: a seeded, resumable batch plan.

We do not hand the DataLoader to `accelerator.prepare` (whose sharding pads, drops or reorders
depending on version and flags). Instead one plan decides everything from (seed, stage, epoch):

* an epoch is a seeded permutation of the training set, padded by wrapping around to a whole
  number of *global* batches (``batch_size * world_size * grad_accum``), so every epoch sees every
  example and every step has the same size;
* a global batch is cut into ``world_size * grad_accum`` micro-batches; process ``rank`` takes
  micro-batches ``rank * grad_accum + m`` for ``m < grad_accum``. So 2 processes × accum 1 and
  1 process × accum 2 see the same micro-batches, which is what makes the DDP test exact;
* the position is (epoch, step-in-epoch), so resuming after a crash replays the same batches
  without reading the skipped ones;
* optional length bucketing (``train.length_buckets = W``): each run of W global batches of the
  permuted order is sorted by report length and cut again into global batches, and the epoch's
  batches are then shuffled (seeded). Micro-batches hold reports of similar length, so less of each
  step is padding (IU reports in random batches of 8: 13% of positions), while every example is
  still seen once an epoch and the plan is still a pure function of (seed, stage, epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import torch

from radgen.config import RecipeConfig
from radgen.errors import ConfigError, DataError


@dataclass(frozen=True)
class BatchPlan:
    num_examples: int
    batch_size: int  # per process, per micro-batch
    grad_accum: int = 1
    world_size: int = 1
    rank: int = 0
    seed: int = 0
    stage_index: int = 0
    shuffle: bool = True
    lengths: tuple[int, ...] | None = None  # per-example token counts, for length bucketing
    bucket_window: int = 0  # global batches sorted together by length (0 = no bucketing)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_examples / self.global_batch))

    def epoch_order(self, epoch: int) -> list[int]:
        """The example order of one epoch, padded by wrap-around to whole global batches."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.stage_index * 10_007 + epoch)
            order = torch.randperm(self.num_examples, generator=generator).tolist()
        else:
            order = list(range(self.num_examples))
        total = self.steps_per_epoch * self.global_batch
        while len(order) < total:  # tiny sets can need more than one wrap
            order += order[: total - len(order)]
        if self.bucket_window > 0 and self.lengths is not None:
            order = self._bucketed(order, epoch)
        return order

    def _bucketed(self, order: list[int], epoch: int) -> list[int]:
        batch, window = self.global_batch, self.global_batch * self.bucket_window
        batches = []
        for start in range(0, len(order), window):  # len(order) is a whole number of global batches
            chunk = sorted(order[start:start + window], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + batch] for i in range(0, len(chunk), batch)]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.stage_index * 10_007 + epoch + 7_919)
        return [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]]

    def micro_batches(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        """This process's `grad_accum` micro-batches (dataset indices) for one optimizer step."""
        order = self.epoch_order(epoch)
        start = step_in_epoch * self.global_batch
        chunk = order[start : start + self.global_batch]
        out = []
        for micro in range(self.grad_accum):
            part = self.rank * self.grad_accum + micro
            out.append(chunk[part * self.batch_size : (part + 1) * self.batch_size])
        return out

    def steps(self, start_epoch: int, start_step: int) -> Iterator[tuple[int, int, list[list[int]]]]:
        """Yield (epoch, step_in_epoch, micro_batches) forever from a saved position."""
        epoch, step = start_epoch, start_step
        while True:
            order_steps = self.steps_per_epoch
            while step < order_steps:
                yield epoch, step, self.micro_batches(epoch, step)
                step += 1
            epoch, step = epoch + 1, 0


def report_lengths(model: Any, dataset: Sequence, max_tokens: int | None = None) -> tuple[int, ...]:
    """Each training example's report length in decoder tokens (at most max_tokens), for bucketing.

    Reads only the report text (`dataset.report(i)` of a StudyDataset), never the images, and
    measures it as training does (`model.tokenize_reports`: prefix and eos included)."""
    texts = [dataset.report(i) if hasattr(dataset, "report") else dataset[i]["report"] for i in range(len(dataset))]
    lengths: list[int] = []
    for start in range(0, len(texts), 4096):  # bounded padded tensors on large datasets
        lengths += model.tokenize_reports(texts[start:start + 4096], max_tokens=max_tokens)["attention_mask"].sum(1).tolist()
    return tuple(lengths)


def eval_batches(num_examples: int, batch_size: int, max_batches: int | None = None, world_size: int = 1, rank: int = 0) -> list[list[int]]:
    """Validation batches in order; rank r takes every world_size-th batch (no padding: exact means)."""
    batches = [list(range(i, min(i + batch_size, num_examples))) for i in range(0, num_examples, batch_size)]
    if max_batches is not None:
        batches = batches[:max_batches]
    return batches[rank::world_size]


def gather_items(dataset: Sequence, indices: list[int]) -> list:
    return [dataset[i] for i in indices]


def collate_pixels(items: list[dict]) -> dict:
    """Batch StudyDataset items (radgen.data.dataset.collate_studies)."""
    from radgen.data.dataset import collate_studies

    return collate_studies(items)


def collate_features(items: list[dict]) -> dict:
    """Batch CachedFeatures items: stacked `image_features` (B, N, D) instead of pixels."""
    batch = {
        "study_ids": [item["study_id"] for item in items],
        "image_keys": [item["image_key"] for item in items],
        "reports": [item["report"] for item in items],
        "finding_labels": [item.get("finding_labels") for item in items],
        "image_features": torch.stack([item["image_features"] for item in items]),
    }
    if "context" in items[0]:
        batch["contexts"] = [item.get("context") or "" for item in items]
    if "lateral_features" in items[0]:
        batch["lateral_features"] = torch.stack([item["lateral_features"] for item in items])
        batch["lateral_mask"] = torch.tensor([bool(item["has_lateral"]) for item in items])
    return batch


TRAIN_SPLITS = ("train",)
VAL_SPLITS = ("val", "valid", "validate", "validation")


def lateral_head(recipe: RecipeConfig) -> bool:
    """Whether the recipe's finding head reads the lateral view (datasets then load it too)."""
    return recipe.model.findings.enabled and recipe.model.findings.lateral


def load_splits(recipe: RecipeConfig, image_transform: object, extra: Sequence[str] = (),
                extra_train: Sequence[str | Path] = ()) -> tuple[Sequence[dict], ...]:
    """StudyDatasets for the train and val splits of `recipe.data.manifest` (image paths relative to it),
    then one per split named in `extra` (e.g. "test"), loaded as val is: one example per study.

    `extra_train`: more manifests whose train studies join the train split (image paths relative to
    their own manifest), e.g. further IU-Phantom renders of the same training studies from other
    seeds (`radgen data phantom --split train --seed 1`). Their other splits are ignored: val and
    test stay the main manifest's."""
    from radgen.data.dataset import StudyDataset, per_study_images
    from radgen.data.study import read_manifest

    data = recipe.data
    if not data.manifest:
        raise ConfigError("data.manifest is not set; pass data.manifest=PATH/manifest.jsonl (see `radgen data --help`)")
    path = Path(data.manifest)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; set data.manifest=PATH to a manifest.jsonl written by `radgen data`")
    studies = read_manifest(path)
    options = dict(section=data.section, cleaning=data.cleaning, images=data.images, max_images=data.max_images, views=data.views,
                   context_section=recipe.model.context.section, lateral=lateral_head(recipe), colour=data.colour)
    train = [s for s in studies if (s.split or "").lower() in TRAIN_SPLITS]
    if not train:
        raise DataError(f"{path}: no study has split 'train' (found splits: {sorted({s.split for s in studies})}); assign splits first")
    train += [study for more in extra_train for study in _train_studies_of(Path(more))]
    # validation stays one example per study (each_frontal expands the train split only), so val
    # loss and the quick BLEU are per study, as `radgen generate` / `evaluate` score
    per_study = {**options, "images": per_study_images(data.images)}
    held_out = [StudyDataset([s for s in studies if (s.split or "").lower() in names], image_transform, root=path.parent, **per_study)
                for names in (VAL_SPLITS, *((name.lower(),) for name in extra))]
    return (StudyDataset(train, image_transform, root=path.parent, **options), *held_out)


def _train_studies_of(path: Path) -> list:
    """The train studies of another manifest, their relative image paths made absolute (they are
    relative to that manifest's folder, not the main one's)."""
    from dataclasses import replace

    from radgen.data.study import read_manifest

    if not path.is_file():
        raise DataError(f"{path}: extra training manifest not found; pass a manifest.jsonl written by `radgen data`")
    studies = [s for s in read_manifest(path) if (s.split or "").lower() in TRAIN_SPLITS]
    if not studies:
        raise DataError(f"{path}: no study has split 'train'; an extra training manifest adds train studies only")
    folder = path.parent.resolve()
    return [replace(s, images=[replace(ref, path=str(absolute)) for ref, absolute in zip(s.images, s.image_paths(folder))])
            for s in studies]
