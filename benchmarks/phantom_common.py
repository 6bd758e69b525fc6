"""Shared by the IU-Phantom benchmarks: a manifest of the real IU X-Ray reports (all 2,902 studies).

Reads `indiana_reports.csv` (Kaggle/Open-I layout) directly: labels["mesh"] = the MeSH terms,
sections findings/impression/indication/comparison, split = deterministic 80/10/10 by uid. The
data layer's `radgen data prepare --format iu-xray-kaggle` builds a similar manifest (it drops
studies it cannot use); the benchmarks keep every study so the timing covers all 2,902.
"""

from __future__ import annotations

import csv
from pathlib import Path

from radgen.data.phantom.render import deterministic_split
from radgen.data.study import Study

DEFAULT_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "iu_xray_reports" / "indiana_reports.csv"


def iu_studies(csv_path: str | Path = DEFAULT_CSV) -> list[Study]:
    studies = []
    with open(csv_path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            uid = row["uid"].strip()
            mesh = [t.strip() for t in (row.get("MeSH") or "").split(";") if t.strip()]
            sections = {k: (row.get(k) or "").strip() for k in ("findings", "impression", "indication", "comparison")}
            studies.append(
                Study(
                    study_id=f"iu-{uid}", subject_id=uid, split=deterministic_split(uid), source="iu-xray-kaggle",
                    sections={k: v for k, v in sections.items() if v}, labels={"mesh": mesh},
                )
            )
    return studies
