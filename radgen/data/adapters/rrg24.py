"""RRG24-style JSON (BioNLP 2024 shared task on Radiology Report Generation) and look-alikes.

Records carry several images and the findings / impression of one study::

    {"id": "...", "images_path": ["a/1.jpg", "a/2.jpg"], "findings": "...", "impression": "...",
     "split": "train", "subject_id": "...", "views": ["PA", "LATERAL"], "source": "..."}

Read from every *.json / *.jsonl file under --root. A .json file may be a list of records or an
object of lists keyed by split ({"train": [...], "validation": [...]}); otherwise the split comes
from the record's "split" field or the file name (train.json, validate.json, test.json).
Image paths are relative to --root and must stay inside it (or absolute). Accepted spellings: id|study_id,
images_path|image_paths|images|image_path, views|view_positions, subject_id|patient_id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radgen.data.adapters.common import OUTSIDE_ROOT, AdapterResult, canonical_split, canonical_view, path_under, read_text_file
from radgen.data.study import ImageRef, Study
from radgen.errors import DataError

_IMAGE_KEYS = ("images_path", "image_paths", "images", "image_path")


def _records(path: Path) -> list[tuple[dict[str, Any], str | None]]:
    text = read_text_file(path)
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((json.loads(line), None))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); fix or remove that line") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); fix the file") from None
    if isinstance(data, list):
        return [(record, None) for record in data]
    if isinstance(data, dict) and all(isinstance(value, list) for value in data.values()):
        return [(record, canonical_split(key)) for key, value in data.items() for record in value]
    raise DataError(f"{path}: expected a list of records or an object of lists keyed by split")


def _as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load(root: str | Path) -> AdapterResult:
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file()) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no *.json or *.jsonl files found; --root must hold RRG24-style study records")
    result = AdapterResult()
    seen: set[str] = set()
    for path in files:
        file_split = canonical_split(path.stem.split("_")[-1]) or canonical_split(path.stem)
        for index, (record, key_split) in enumerate(_records(path)):
            if not isinstance(record, dict):
                result.skip("record is not a JSON object", f"{path.name}[{index}]")
                continue
            study_id = str(record.get("id") or record.get("study_id") or f"{path.stem}-{index}")
            if study_id in seen:
                result.skip("duplicate study id", study_id)
                continue
            seen.add(study_id)
            paths = next((_as_list(record[key]) for key in _IMAGE_KEYS if key in record), [])
            if any(not isinstance(item, str) for item in paths):
                result.skip("image entries are not path strings (embedded images are not supported)", study_id)
                continue
            resolved = [path_under(root, item, allow_absolute=True) for item in paths]
            if None in resolved:
                result.skip(OUTSIDE_ROOT, study_id)
                continue
            views = _as_list(record.get("views") or record.get("view_positions"))
            images = [ImageRef(item, canonical_view(views[i]) if i < len(views) else "UNKNOWN") for i, item in enumerate(resolved)]
            sections = {
                name: str(record[name]).strip()
                for name in ("findings", "impression", "indication", "comparison")
                if record.get(name) and str(record[name]).strip()
            }
            subject = record.get("subject_id") or record.get("patient_id")
            meta = {"dataset": record["source"]} if record.get("source") else {}
            result.studies.append(
                Study(
                    study_id=study_id, subject_id=None if subject is None else str(subject), images=images,
                    sections=sections, split=canonical_split(record.get("split")) or key_split or file_split,
                    source="rrg24", meta=meta,
                )
            )
    return result
