"""The Study record and the manifest file format.

A manifest is JSONL, one study per line. `Study.from_dict(study.to_dict()) == study` holds for every
study and `write_manifest` followed by `read_manifest` returns equal studies in the same order, so a
manifest can be edited by hand or by other tools and read back without loss.

Example line::

    {"study_id": "iu-1", "subject_id": "1", "split": "train", "source": "iu-xray-kaggle",
     "images": [{"path": "images/1_IM-0001-4001.png", "view": "PA"}],
     "sections": {"findings": "The heart is normal in size.", "impression": "Normal chest."},
     "labels": {"mesh": ["normal"]}, "meta": {}}

Image paths are stored as given by the adapter; relative paths are resolved against the manifest's
directory by `Study.image_paths(root)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radgen.errors import DataError
from radgen.io import read_jsonl, write_jsonl

SECTION_NAMES = ("findings", "impression", "indication", "comparison")
SPLITS = ("train", "val", "test")
# Canonical view names; adapters map dataset spellings (e.g. MIMIC "ViewPosition", IU "Frontal") onto these.
VIEWS = ("PA", "AP", "LATERAL", "LL", "FRONTAL", "UNKNOWN")


@dataclass
class ImageRef:
    """One image of a study: where it is and which projection it shows."""

    path: str
    view: str = "UNKNOWN"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "view": self.view}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageRef":
        if "path" not in data:
            raise DataError(f"image entry {data!r} has no 'path'; every image needs a path")
        return cls(path=str(data["path"]), view=str(data.get("view", "UNKNOWN")))

    @property
    def is_frontal(self) -> bool:
        return self.view in ("PA", "AP", "FRONTAL")


@dataclass
class Study:
    """One imaging study with its report sections, labels and split.

    `labels` is free-form per source: e.g. ``{"mesh": [...], "chexpert": {"Cardiomegaly": 1, ...}}``.
    `meta` carries anything else an adapter or the phantom renderer wants to keep (e.g. finding
    regions); it round-trips untouched.
    """

    study_id: str
    subject_id: str | None = None
    images: list[ImageRef] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> str:
        return self.sections.get("findings", "") or ""

    @property
    def impression(self) -> str:
        return self.sections.get("impression", "") or ""

    def report(self, section: str = "findings") -> str:
        """Text of `section`: 'findings', 'impression' or 'both' (findings then impression)."""
        if section == "both":
            return " ".join(part for part in (self.findings, self.impression) if part).strip()
        if section not in SECTION_NAMES:
            raise DataError(f"unknown report section {section!r}; use one of findings, impression, both")
        return self.sections.get(section, "") or ""

    def image_paths(self, root: str | os.PathLike | None = None) -> list[Path]:
        """Absolute image paths; relative ones are taken relative to `root` (usually the manifest's folder)."""
        base = Path(root) if root is not None else Path(".")
        return [Path(ref.path) if os.path.isabs(ref.path) else base / ref.path for ref in self.images]

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "subject_id": self.subject_id,
            "split": self.split,
            "source": self.source,
            "images": [ref.to_dict() for ref in self.images],
            "sections": dict(self.sections),
            "labels": dict(self.labels),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Study":
        known = {"study_id", "subject_id", "split", "source", "images", "sections", "labels", "meta"}
        unknown = set(data) - known
        if unknown:
            raise DataError(f"study record has unknown keys {sorted(unknown)}; allowed keys: {sorted(known)} (put extras under 'meta')")
        if "study_id" not in data or data["study_id"] in (None, ""):
            raise DataError("study record has no 'study_id'; every study needs a unique id")
        subject = data.get("subject_id")
        return cls(
            study_id=str(data["study_id"]),
            subject_id=None if subject is None else str(subject),
            images=[ImageRef.from_dict(item) for item in data.get("images") or []],
            sections={str(k): ("" if v is None else str(v)) for k, v in (data.get("sections") or {}).items()},
            labels=dict(data.get("labels") or {}),
            split=data.get("split"),
            source=data.get("source"),
            meta=dict(data.get("meta") or {}),
        )


def write_manifest(path: str | os.PathLike, studies: list[Study]) -> int:
    """Write studies as JSONL atomically (temp file + rename). Duplicate ids are an error."""
    seen: set[str] = set()
    for study in studies:
        if study.study_id in seen:
            raise DataError(f"{path}: duplicate study_id {study.study_id!r}; study ids must be unique within a manifest")
        seen.add(study.study_id)
    return write_jsonl(path, (study.to_dict() for study in studies))


def read_manifest(path: str | os.PathLike) -> list[Study]:
    """Read a manifest written by `write_manifest` (or by hand in the same format)."""
    studies = []
    for number, row in enumerate(read_jsonl(path), start=1):
        try:
            studies.append(Study.from_dict(row))
        except DataError as err:
            raise DataError(f"{path}: study {number}: {err}") from None
    return studies
