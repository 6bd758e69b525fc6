"""Shared loader for metric benchmarks: IU X-Ray reports (Kaggle CSV) with the annotation.json split.

Until `radgen data prepare --format iu-xray-kaggle` is used here, benchmarks read the CSV directly.
Split: a study is in train/val/test when its uid is an id of that split in annotation.json (the
development copy's R2Gen-style file: 2,285 / 302 / 290, not R2Gen's 2,069 / 296 / 590).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from radgen.data.study import Study

IU_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "iu_xray_reports"


def iu_studies(folder: Path = IU_DIR) -> list[Study]:
    split_of: dict[str, str] = {}
    annotation = folder / "annotation.json"
    if annotation.is_file():
        for split, records in json.loads(annotation.read_text()).items():
            for record in records:
                split_of[str(record["id"])] = split
    studies = []
    with open(folder / "indiana_reports.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            uid = str(row["uid"])
            studies.append(
                Study(
                    study_id=uid,
                    sections={k: row[k] or "" for k in ("findings", "impression", "indication", "comparison")},
                    labels={"mesh": row["MeSH"]},
                    split=split_of.get(uid),
                    source="iu-xray-kaggle",
                )
            )
    return studies
