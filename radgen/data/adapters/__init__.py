"""Dataset adapters: one module per on-disk format, each parsing into `Study` records.

`prepare(format, root, ...)` is what `radgen data prepare` runs: parse with the format's adapter,
then apply the shared steps (section filter → view filter → image existence check → split
assignment) so they behave the same for every dataset. Every study dropped is counted by reason
in the returned `AdapterResult`; nothing is dropped silently.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from radgen.data.adapters.common import (
    AdapterResult,
    assign_splits,
    check_images,
    filter_sections,
    filter_views,
    parse_split_ratio,
    parse_views,
)
from radgen.errors import DataError

# format name -> "module:function" (imported lazily so one format's parser never slows another)
FORMATS: dict[str, str] = {
    "mimic-cxr": "radgen.data.adapters.mimic_cxr:load",
    "iu-xray-r2gen": "radgen.data.adapters.iu_xray:load_r2gen",
    "iu-xray-kaggle": "radgen.data.adapters.iu_xray:load_kaggle",
    "iu-xray-openi": "radgen.data.adapters.iu_xray:load_openi",
    "roco": "radgen.data.adapters.roco:load",
    "rrg24": "radgen.data.adapters.rrg24:load",
    "manifest": "radgen.data.adapters.generic:load",
}


def get_loader(format_name: str) -> Callable[[Path], AdapterResult]:
    if format_name not in FORMATS:
        raise DataError(f"unknown dataset format {format_name!r}; use one of {', '.join(FORMATS)}")
    module_name, function_name = FORMATS[format_name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def prepare(
    format_name: str,
    root: str | os.PathLike,
    *,
    views: str | Sequence[str] | None = None,
    section: str | None = None,
    split_ratio: str | Sequence[float] | None = None,
    seed: int = 0,
    require_images: bool = False,
    resplit: str | Sequence[float] | None = None,
) -> AdapterResult:
    """Parse a dataset and apply the shared filters; returns studies plus what was dropped and why.

    views: keep only images of these views (e.g. "PA,AP"); studies left without an image are dropped.
    section: "findings" | "impression" | "both" drops studies whose section is empty; None keeps
        studies with any findings or impression text.
    split_ratio/seed: split for studies the dataset gives none, grouped by subject.
    require_images: drop studies with no existing image file instead of keeping them text-only.
    resplit: ignore the dataset's own split and split every kept study at random by this ratio
        (seeded, grouped by subject, else by study), e.g. the 80/10/10 random split of seed 000.
    """
    loader = get_loader(format_name)
    wanted_views = parse_views(views)
    if resplit is not None and split_ratio is not None:
        raise DataError("--resplit and --split-ratio both given; --resplit RATIO re-splits every study, so drop --split-ratio")
    ratio = parse_split_ratio(resplit, "--resplit") if resplit is not None else parse_split_ratio(split_ratio)
    if section not in (None, "findings", "impression", "both"):
        raise DataError(f"unknown --section {section!r}; use findings, impression or both")
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: not found; --root must point at the {format_name} dataset")
    result = loader(root)
    # Text first: a study without report text is dropped before its images are looked at, so the
    # counts below describe only studies that are kept or dropped for image reasons.
    filter_sections(result, section)
    filter_views(result, wanted_views)
    check_images(result, require_images)
    if resplit is not None:
        # after filtering, so the ratio holds over the studies actually written
        replaced = sum(1 for study in result.studies if study.split is not None)
        for study in result.studies:
            study.split = None
        if replaced:
            result.note("dataset's own split replaced by --resplit", count=replaced)
    assigned = assign_splits(result.studies, ratio, seed)
    if assigned:
        grouping = "by subject" if any(study.subject_id for study in result.studies) else "by study: no subject ids"
        result.note(f"split assigned from ratio {','.join(f'{r:g}' for r in ratio)} seed {seed} ({grouping})", count=assigned)
    return result


__all__ = ["FORMATS", "AdapterResult", "get_loader", "prepare"]
