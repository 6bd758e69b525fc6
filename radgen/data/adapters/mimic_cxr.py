"""MIMIC-CXR-JPG (PhysioNet, credentialed) in its official layout.

    ROOT/
      mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
      mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, ..., ViewPosition, ...
      files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg
      mimic-cxr-reports/files/pXX/pSUBJECT/sSTUDY.txt   (from mimic-cxr-reports.zip)

The split file lists every image; images are grouped into studies, the official split is kept
("validate" → "val"), ViewPosition becomes each image's view (so `--views PA,AP` keeps the
frontal images only, as seed 004 does), and the free-text report is split into sections by
`radgen.data.text.extract_sections`. Studies whose report is missing or not UTF-8 are dropped and
counted; `how` the sections were found is kept in meta["sections_from"].
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from radgen.data.adapters.common import OUTSIDE_ROOT, AdapterResult, canonical_split, canonical_view, path_under, read_csv_rows
from radgen.data.study import ImageRef, Study
from radgen.data.text import extract_sections
from radgen.errors import DataError

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
REPORTS_DIR = "mimic-cxr-reports"


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root / name}: not found; --root must be the MIMIC-CXR-JPG folder holding {name}")


def _subject_dir(subject_id: str) -> str:
    return f"p{subject_id[:2]}/p{subject_id}"


def load(root: str | Path) -> AdapterResult:
    root = Path(root)
    result = AdapterResult()
    split_rows = read_csv_rows(_find(root, SPLIT_FILE), required=("dicom_id", "study_id", "subject_id", "split"))
    metadata_path = _find(root, METADATA_FILE)
    view_of = {row["dicom_id"]: row.get("ViewPosition", "") for row in read_csv_rows(metadata_path, required=("dicom_id", "ViewPosition"))}
    reports_root = root / REPORTS_DIR / "files"
    if not reports_root.is_dir():
        reports_root = root / REPORTS_DIR
    if not reports_root.is_dir():
        raise DataError(f"{root / REPORTS_DIR}: reports folder not found; unzip mimic-cxr-reports.zip into --root")

    images_of: dict[tuple[str, str], list[ImageRef]] = defaultdict(list)
    split_of: dict[tuple[str, str], str | None] = {}
    without_metadata: set[tuple[str, str]] = set()
    outside: set[tuple[str, str]] = set()
    for row in split_rows:
        key = (row["subject_id"].strip(), row["study_id"].strip())
        dicom_id = row["dicom_id"].strip()
        if dicom_id not in view_of:
            without_metadata.add(key)
        path = path_under(root / "files", f"{_subject_dir(key[0])}/s{key[1]}/{dicom_id}.jpg")
        if path is None:  # ids are digits in the real files; "../" in one means a tampered CSV
            outside.add(key)
            continue
        images_of[key].append(ImageRef(path, canonical_view(view_of.get(dicom_id))))
        split_of[key] = canonical_split(row["split"])

    # ~227k report files on the full dataset: show progress (disabled when stderr is not a terminal).
    for key in outside:
        images_of.pop(key, None)
        result.skip(OUTSIDE_ROOT, f"s{key[1]}")
    for (subject_id, study_id), images in tqdm(images_of.items(), desc="MIMIC-CXR reports", unit="study", disable=None):
        report_path = reports_root / _subject_dir(subject_id) / f"s{study_id}.txt"
        try:
            raw = report_path.read_bytes()
        except FileNotFoundError:
            result.skip("report file missing", str(report_path))
            continue
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            result.skip("report not valid UTF-8", str(report_path))
            continue
        if (subject_id, study_id) in without_metadata:
            result.note("image(s) not in the metadata file (view UNKNOWN)", f"s{study_id}")
        sections, how = extract_sections(text)
        if how == "no_header":
            result.note("report without FINDINGS/IMPRESSION header (whole text used as findings)", f"s{study_id}")
        result.studies.append(
            Study(
                study_id=f"s{study_id}",
                subject_id=subject_id,
                images=images,
                sections=sections,
                split=split_of[(subject_id, study_id)],
                source="mimic-cxr",
                meta={"sections_from": how},
            )
        )
    return result
