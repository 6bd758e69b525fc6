"""Torch dataset over Study records: images → tensors, report section → cleaned text.

`StudyDataset` knows nothing of models: the `ImageTransform` (size/mean/std from the encoder) is
passed in, and tokenisation happens in the model (`ReportGenerator.tokenize_reports`), so one
dataset serves every recipe. Items::

    {"study_id": str, "pixel_values": Tensor(C,H,W) (list mode: (N,C,H,W)),
     "image_key": str, "report": str}

`image_key` is the sha1 of the bytes of the images used plus the image mode (and `colour="keep"`,
so colour and gray decodes of one file never share features), so a frozen-encoder feature cache
can key on it and stays valid when files are renamed, and is invalidated when an image changes. In
text_only mode items carry neither pixel_values nor image_key.

`images="each_frontal"` makes one item per frontal image of a study (seed 004 trains on every AP/PA
image with its study's report); `studies[i]` is then the study of item i, so a study repeats once
per frontal image.

Decoded images can be kept in an in-memory LRU cache (`cache_size` images). With DataLoader
workers each worker process holds its own cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from radgen.data.images import decode_image, encoder_colour, read_image_bytes, stitch_images
from radgen.data.study import SECTION_NAMES, ImageRef, Study, read_manifest
from radgen.data.text import SECTION_CHOICES, clean_report, select_section
from radgen.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_MODES = ("first_frontal", "each_frontal", "stitch", "list")
# modes whose item is one image: they share image keys (same pixels in, same features out), so a
# feature cache filled by an each_frontal train split serves a first_frontal val split and back
_SINGLE_IMAGE_MODES = ("first_frontal", "each_frontal")


def per_study_images(mode: str) -> str:
    """The image mode that gives one item per study: what validation and generation use.

    each_frontal trains on every frontal image but a report is written, and scored, once per
    study (from its first frontal image); list mode decodes from the first frontal image too.
    """
    return "first_frontal" if mode in ("each_frontal", "list") else mode


class _DecodedImageCache:
    """LRU of (colour mode, path) → (sha1 of file bytes, decoded "L"/"RGB" image)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], tuple[str, Image.Image]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, path: Path, colour: str = "gray") -> tuple[str, Image.Image]:
        # the colour mode is part of the key: a gray decode must never answer a colour request
        key = (colour, str(path))
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        data = read_image_bytes(path)
        value = (hashlib.sha1(data).hexdigest(), decode_image(data, path, colour=colour))
        if self.capacity > 0:
            self._items[key] = value
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value


class StudyDataset(Dataset):
    """Map-style dataset of studies for training, validation and generation.

    studies: Study records or a manifest path (then `root` defaults to the manifest's folder).
    image_transform: callable PIL image → Tensor(C,H,W), usually the model's `image_transform`.
    root: folder relative image paths are resolved against.
    section: "findings" | "impression" | "both"; cleaning: a `clean_report` mode.
    images: "first_frontal" (first PA/AP/FRONTAL image, else the first image), "each_frontal" (one
        item per PA/AP/FRONTAL image, else one of the first image; seed 004), "stitch" (up to
        `max_images` side by side, seed 002) or "list" (up to `max_images` separate tensors).
    views: only use images of these views (e.g. ("PA", "AP")).
    text_only: yield no pixels (decoder pre-training, report statistics); one item per study in
        every image mode.
    drop_empty_reports: drop studies whose section is empty (counted in a log line); set False
        for generation on studies without reports.
    cache_size: number of decoded images kept in memory (0: no cache).
    colour: "gray" (every image decoded to "L") or "keep" (real colour stays "RGB"; recipe
        data.colour); an image_transform with channels=1 always gets "gray".

    A study with no usable image raises a DataError at construction (not mid-epoch) unless
    text_only is set; prepare the manifest with --require-images to avoid such studies.
    """

    def __init__(
        self,
        studies: Sequence[Study] | str | os.PathLike,
        image_transform: Callable[[Image.Image], torch.Tensor] | None,
        root: str | os.PathLike | None = None,
        section: str = "findings",
        cleaning: str = "r2gen-iu",
        images: str = "first_frontal",
        max_images: int = 4,
        views: Sequence[str] | None = None,
        text_only: bool = False,
        drop_empty_reports: bool = True,
        cache_size: int = 0,
        context_section: str | None = None,
        lateral: bool = False,
        colour: str = "gray",
    ) -> None:
        if isinstance(studies, (str, os.PathLike)):
            root = root if root is not None else Path(studies).parent
            studies = read_manifest(studies)
        if section not in SECTION_CHOICES:
            raise DataError(f"unknown report section {section!r}; use one of {', '.join(SECTION_CHOICES)}")
        if images not in IMAGE_MODES:
            raise DataError(f"unknown images mode {images!r}; use one of {', '.join(IMAGE_MODES)}")
        if not text_only and image_transform is None:
            raise DataError("StudyDataset needs an image_transform (e.g. model.image_transform) unless text_only=True")
        clean_report("", cleaning)  # validates the mode name early
        self.root = Path(root) if root is not None else Path(".")
        self.image_transform = image_transform
        self.section, self.cleaning, self.images, self.max_images = section, cleaning, images, max_images
        self.views = tuple(views) if views else None
        self.text_only = text_only
        if context_section is not None and context_section not in SECTION_NAMES:
            raise DataError(f"unknown context section {context_section!r}; use one of {', '.join(SECTION_NAMES)}")
        self.context_section = context_section
        self.lateral = lateral  # also load each study's lateral view (a lateral finding head: model.findings.lateral)
        self._cache = _DecodedImageCache(cache_size)
        self.colour = encoder_colour(colour, image_transform)  # DataError on an unknown mode

        kept, empty = [], []
        for study in studies:
            if drop_empty_reports and not select_section(study.sections, section):
                empty.append(study.study_id)
                continue
            kept.append(study)
        if empty:
            logger.warning("StudyDataset: dropped %d studies with empty %s (e.g. %s)", len(empty), section, ", ".join(empty[:3]))
        if not text_only:
            without = [study.study_id for study in kept if not self._select_refs(study)]
            if without:
                raise DataError(
                    f"{len(without)} studies have no usable image{' of views ' + ','.join(self.views) if self.views else ''} "
                    f"(e.g. {', '.join(without[:3])}); use text_only=True or prepare the manifest with --require-images"
                )
        # one item per study, or per frontal image (each_frontal): studies[i] and _item_refs[i]
        # belong to item i, so code that walks `studies` next to the items stays aligned
        self.studies: list[Study] = []
        self._item_refs: list[list[ImageRef]] = []
        for study in kept:
            refs = [] if text_only else self._select_refs(study)
            groups = [[ref] for ref in refs] if self.images == "each_frontal" and not text_only else [refs]
            self.studies.extend([study] * len(groups))
            self._item_refs.extend(groups)
        self.dropped_empty = len(empty)

    def __len__(self) -> int:
        return len(self.studies)

    def _select_refs(self, study: Study) -> list[ImageRef]:
        refs = [ref for ref in study.images if self.views is None or ref.view in self.views]
        if self.images in _SINGLE_IMAGE_MODES:
            frontal = [ref for ref in refs if ref.is_frontal]
            if self.images == "each_frontal":
                return frontal or refs[:1]
            return (frontal or refs)[:1]
        return refs[: self.max_images]

    def _path(self, ref: ImageRef) -> Path:
        return Path(ref.path) if os.path.isabs(ref.path) else self.root / ref.path

    def report(self, index: int) -> str:
        text = select_section(self.studies[index].sections, self.section)
        return clean_report(text, self.cleaning) if text else ""

    def __getitem__(self, index: int) -> dict[str, Any]:
        study = self.studies[index]
        # the manifest's CheXpert labels ({} = labelled, nothing present; None = never labelled): targets for a finding head
        item: dict[str, Any] = {"study_id": study.study_id, "report": self.report(index),
                                "finding_labels": study.labels.get("chexpert")}
        if self.context_section is not None:  # clinical context for the prompt (model.context), raw text
            item["context"] = study.sections.get(self.context_section) or ""
        if self.text_only:
            return item
        refs = self._item_refs[index]
        digests, decoded = [], []
        for ref in refs:
            digest, image = self._cache.get(self._path(ref), self.colour)
            digests.append(digest)
            decoded.append(image)
        assert self.image_transform is not None
        if self.images == "list":
            item["pixel_values"] = torch.stack([self.image_transform(image) for image in decoded])
        else:
            image = stitch_images(decoded, self.max_images) if self.images == "stitch" else decoded[0]
            item["pixel_values"] = self.image_transform(image)
        mode = "first_frontal" if self.images in _SINGLE_IMAGE_MODES else self.images
        key_source = f"{mode}:{self.max_images if mode != 'first_frontal' else 1}:" + ",".join(digests)
        item["image_key"] = hashlib.sha1((key_source + self._colour_key).encode()).hexdigest()
        if self.lateral:
            self._add_lateral(study, item)
        return item

    @property
    def _colour_key(self) -> str:
        # gray keys stay as they were before data.colour existed, so existing feature caches stay valid
        return ":colour=keep" if self.colour == "keep" else ""

    def lateral_ref(self, study: Study) -> ImageRef | None:
        """The study's first lateral (non-frontal) view among the kept views, if any, never the image
        read as its frontal one (the first image it decodes): a study of one image of unknown view has
        no lateral, where it used to be read as both."""
        primary = next(iter(self._select_refs(study)), None)
        return next((ref for ref in study.images if not ref.is_frontal and (self.views is None or ref.view in self.views)
                     and ref is not primary), None)

    def _add_lateral(self, study: Study, item: dict[str, Any]) -> None:
        ref = self.lateral_ref(study)
        if ref is None:  # zeros keep the batch rectangular; has_lateral=False tells the head to ignore them
            item["lateral_pixel_values"] = torch.zeros_like(item["pixel_values"])
            item["has_lateral"], item["lateral_image_key"] = False, None
            return
        digest, image = self._cache.get(self._path(ref), self.colour)
        assert self.image_transform is not None
        item["lateral_pixel_values"] = self.image_transform(image)
        item["has_lateral"] = True
        item["lateral_image_key"] = hashlib.sha1(f"first_frontal:1:{digest}{self._colour_key}".encode()).hexdigest()


def collate_studies(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: {"study_ids", "pixel_values" (B,C,H,W), "image_keys", "reports"}.

    List-mode items (N,C,H,W) with different N are zero-padded to (B, N_max, C, H, W) and an
    "image_mask" (B, N_max) bool marks the real images. Text-only items give no pixel_values.
    """
    if not items:
        raise DataError("collate_studies got an empty batch")
    batch: dict[str, Any] = {
        "study_ids": [item["study_id"] for item in items],
        "reports": [item["report"] for item in items],
        "finding_labels": [item.get("finding_labels") for item in items],
    }
    if "context" in items[0]:
        batch["contexts"] = [item.get("context") or "" for item in items]
    if "pixel_values" not in items[0]:
        return batch
    pixels = [item["pixel_values"] for item in items]
    if pixels[0].ndim == 4:
        most = max(p.shape[0] for p in pixels)
        padded = pixels[0].new_zeros((len(pixels), most, *pixels[0].shape[1:]))
        mask = torch.zeros((len(pixels), most), dtype=torch.bool)
        for row, value in enumerate(pixels):
            padded[row, : value.shape[0]] = value
            mask[row, : value.shape[0]] = True
        batch["pixel_values"], batch["image_mask"] = padded, mask
    else:
        batch["pixel_values"] = torch.stack(pixels)
    if "lateral_pixel_values" in items[0]:
        batch["lateral_pixel_values"] = torch.stack([item["lateral_pixel_values"] for item in items])
        batch["lateral_mask"] = torch.tensor([bool(item["has_lateral"]) for item in items])
    batch["image_keys"] = [item["image_key"] for item in items]
    return batch


LATERAL_KEYS = ("lateral_pixel_values", "lateral_features", "lateral_mask")


def stacked_laterals(laterals: Sequence[torch.Tensor | None], like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-study lateral views (None where a study has none) as the model's keyword arguments:
    zeros keep the batch rectangular and `lateral_mask` tells the head which studies have one;
    empty when none has a lateral."""
    if all(lateral is None for lateral in laterals):
        return {}
    return {"lateral_mask": torch.tensor([lateral is not None for lateral in laterals]),
            "lateral_pixel_values": torch.stack([lateral if lateral is not None else torch.zeros_like(like) for lateral in laterals])}


def lateral_inputs(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """A batch's lateral-view entries (for a lateral finding head), as keyword arguments of the
    model's forward / generate / predict_findings; empty when the batch has none."""
    return {key: (batch[key].to(device) if device is not None else batch[key]) for key in LATERAL_KEYS if key in batch}
