"""Your own data: a CSV or JSONL table, or a folder of images with report text files.

``--root`` is one of:

* a ``.jsonl`` file: either radgen manifest lines (Study records) or flat rows as below;
* a ``.csv`` file with flat rows;
* a folder: every ``NAME.txt`` is a report; its images are ``NAME.png|jpg|jpeg|dcm`` and
  ``NAME_*.png|...`` beside it, or all images in a folder ``NAME/``. A ``report.txt`` (or
  ``findings.txt``) inside a folder makes that folder one study with all its images. Report text
  may use FINDINGS:/IMPRESSION: headers; without headers it is the findings.

Flat row columns (only the report text is required): ``study_id`` (or ``id``; default: row
number), ``subject_id``, ``split``, ``image`` / ``images`` / ``image_path`` / ``path`` (several
paths separated by ``;`` in a CSV, or a JSON list), ``view`` / ``views`` (same separators),
``findings``, ``impression``, ``report`` (used as findings when there is no findings column),
``indication``, ``comparison``. Rows that repeat a ``study_id`` add their images to that study
(one-image-per-row tables). Relative image paths are resolved against the table's folder and must
stay inside it (a row with "../" climbing out is skipped and counted); images elsewhere need absolute
paths. A study without images is kept as a text-only study (counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radgen.data.adapters.common import OUTSIDE_ROOT, AdapterResult, canonical_split, canonical_view, path_under, read_csv_rows, read_text_file
from radgen.data.study import ImageRef, Study
from radgen.data.text import decode_report_bytes, extract_sections
from radgen.errors import DataError
from radgen.io import parse_jsonl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
_IMAGE_COLUMNS = ("images", "image", "image_paths", "image_path", "path", "paths")
_VIEW_COLUMNS = ("views", "view")
_REPORT_FILE_NAMES = ("report.txt", "findings.txt")


def _split_values(value: Any, where: str, column: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    if isinstance(value, str):
        return [item.strip() for item in value.replace("|", ";").split(";") if item.strip()]
    # A number or object here is a broken export, not a path: say so instead of guessing.
    raise DataError(f"{where}: '{column}' must be a string or a list of strings, got {type(value).__name__}; fix that row")


def _study_from_flat_row(row: dict[str, Any], number: int, where: str) -> Study:
    study_id = str(row.get("study_id") or row.get("id") or f"row-{number}").strip()
    paths = next((_split_values(row[key], where, key) for key in _IMAGE_COLUMNS if key in row and row[key]), [])
    views = next((_split_values(row[key], where, key) for key in _VIEW_COLUMNS if key in row and row[key]), [])
    images = [ImageRef(path, canonical_view(views[i]) if i < len(views) else "UNKNOWN") for i, path in enumerate(paths)]
    sections = {}
    for name in ("findings", "impression", "indication", "comparison"):
        text = str(row.get(name) or "").strip()
        if text:
            sections[name] = text
    if "findings" not in sections and str(row.get("report") or "").strip():
        sections["findings"] = str(row["report"]).strip()
    subject = row.get("subject_id")
    return Study(
        study_id=study_id, subject_id=str(subject).strip() if subject not in (None, "") else None, images=images,
        sections=sections, split=canonical_split(row.get("split")), source="manifest",
    )


def _merge(result: AdapterResult, study: Study, index: dict[str, Study], merged: set[str]) -> None:
    if study.study_id in index:
        previous = index[study.study_id]
        previous.images.extend(study.images)
        for name, text in study.sections.items():
            previous.sections.setdefault(name, text)
        if study.study_id not in merged:  # counted once per study, however many rows it spans
            merged.add(study.study_id)
            result.note("built from several rows with the same study_id", study.study_id)
        return
    index[study.study_id] = study
    result.studies.append(study)


def _load_table(path: Path) -> AdapterResult:
    result, index, merged = AdapterResult(), {}, set()
    base = path.parent
    if path.suffix == ".csv":
        rows: list[dict] = read_csv_rows(path)
    else:
        rows = parse_jsonl(read_text_file(path), path)
    for number, row in enumerate(rows, start=1):
        if isinstance(row.get("sections"), dict) or (isinstance(row.get("images"), list) and row["images"] and isinstance(row["images"][0], dict)):
            try:
                study = Study.from_dict(row)
            except DataError as err:
                raise DataError(f"{path}:{number}: {err}") from None
        else:
            study = _study_from_flat_row(row, number, f"{path}:{number}")
        resolved = [path_under(base, ref.path, allow_absolute=True) for ref in study.images]
        if None in resolved:
            result.skip(OUTSIDE_ROOT, f"{path.name}:{number}")
            continue
        for ref, full in zip(study.images, resolved):
            ref.path = full
        _merge(result, study, index, merged)
    return result


def _images_for(report: Path) -> tuple[str, list[Path]]:
    folder = report.parent
    if report.name.lower() in _REPORT_FILE_NAMES:
        return folder.name, sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    stem = report.stem
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and (p.stem == stem or p.stem.startswith(f"{stem}_"))]
    if (folder / stem).is_dir():
        images += [p for p in (folder / stem).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return stem, sorted(images)


def _load_folder(root: Path) -> AdapterResult:
    result = AdapterResult()
    reports = sorted(root.rglob("*.txt"))
    if not reports:
        raise DataError(f"{root}: no *.txt report files found; put one NAME.txt report beside its NAME.png images")
    seen: set[str] = set()
    for report in reports:
        study_id, images = _images_for(report)
        if study_id in seen:
            result.skip("duplicate study name (same NAME.txt in two folders)", str(report))
            continue
        seen.add(study_id)
        try:
            text = decode_report_bytes(report.read_bytes(), report)
        except DataError:
            result.skip("report not valid UTF-8", str(report))
            continue
        sections, _how = extract_sections(text)
        result.studies.append(
            Study(study_id=study_id, images=[ImageRef(str(p), "UNKNOWN") for p in images], sections=sections, source="manifest")
        )
    return result


def load(root: str | Path) -> AdapterResult:
    root = Path(root)
    if root.is_dir():
        return _load_folder(root)
    if root.suffix.lower() in (".csv", ".jsonl"):
        return _load_table(root)
    if not root.exists():
        raise DataError(f"{root}: not found; --root for --format manifest is a .csv or .jsonl file or a folder")
    raise DataError(f"{root}: unsupported file type; --format manifest reads a .csv or .jsonl file or a folder of images + .txt reports")
