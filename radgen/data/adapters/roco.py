"""ROCO (Radiology Objects in COntext): image folders plus captions.

Two layouts are read, both found anywhere under --root:

* a caption CSV with a ``caption`` column and the image file name in ``name`` (or ``image`` /
  ``filename``), plus an optional ``id`` column (the CSV form most ROCO mirrors ship, e.g.
  ``radiology/traindata.csv``);
* ROCO's own ``captions.txt`` (``ROCO_00002<TAB>caption``), with image names taken from
  ``dlinks.txt`` (last tab-separated field) when present, else ``<id>.jpg``.

Images are looked up in an ``images/`` folder beside the caption file (else ROOT/images). The
split comes from the caption file's path (train / validation|val / test in a folder or file
name); files without one get a split from --split-ratio/--seed. The caption is stored as the
``findings`` section (so ``section="findings"`` trains captioning, as seed 001 does on ROCO).
"""

from __future__ import annotations

import re
from pathlib import Path

from radgen.data.adapters.common import OUTSIDE_ROOT, AdapterResult, path_under, read_csv_rows, read_text_file
from radgen.data.study import ImageRef, Study
from radgen.errors import DataError

_NAME_COLUMNS = ("name", "image", "filename", "file_name", "image_path", "path")
_VAL_RE = re.compile(r"valid|(^|[^a-z])val([^a-z]|$)")


def _split_from_path(path: Path, root: Path) -> str | None:
    """train/val/test from the innermost folder or file name that names one (e.g. traindata.csv)."""
    for part in reversed(path.relative_to(root).parts):
        lowered = part.lower()
        if _VAL_RE.search(lowered):
            return "val"
        if "train" in lowered:
            return "train"
        if "test" in lowered:
            return "test"
    return None


def _image_dir(caption_file: Path, root: Path) -> Path:
    for candidate in (caption_file.parent / "images", root / "images"):
        if candidate.is_dir():
            return candidate
    return caption_file.parent / "images"


def _entries_from_csv(path: Path) -> list[tuple[str, str, str]]:
    rows = read_csv_rows(path, required=("caption",))
    name_column = next((column for column in _NAME_COLUMNS if rows and column in rows[0]), None)
    if name_column is None and rows:
        raise DataError(f"{path}: no image name column; ROCO caption CSVs need one of {', '.join(_NAME_COLUMNS)} next to 'caption'")
    entries = []
    for row in rows:
        name = row[name_column].strip()
        entries.append((row.get("id", "").strip() or Path(name).stem, name, row["caption"]))
    return entries


def _entries_from_captions_txt(path: Path) -> list[tuple[str, str, str]]:
    names: dict[str, str] = {}
    links = path.parent / "dlinks.txt"
    if links.is_file():
        for line in read_text_file(links).splitlines():
            fields = [field.strip() for field in line.split("\t") if field.strip()]
            if len(fields) >= 2:
                names[fields[0]] = fields[-1]
    entries = []
    for line in read_text_file(path).splitlines():
        if not line.strip():
            continue
        roco_id, _, caption = line.partition("\t")
        roco_id = roco_id.strip()
        entries.append((roco_id, names.get(roco_id, f"{roco_id}.jpg"), caption))
    return entries


def load(root: str | Path) -> AdapterResult:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; --root must be the ROCO data folder")
    caption_files = sorted(root.rglob("captions.txt")) + sorted(p for p in root.rglob("*.csv"))
    if not caption_files:
        raise DataError(f"{root}: no captions.txt or caption CSV found; ROCO needs captions next to an images/ folder")
    result = AdapterResult()
    seen: set[str] = set()
    for caption_file in caption_files:
        non_radiology = any(part.lower() in ("non-radiology", "nonradiology", "non_radiology") for part in caption_file.relative_to(root).parts)
        if caption_file.suffix == ".csv":
            try:
                entries = _entries_from_csv(caption_file)
            except DataError as err:
                if "missing column(s) caption" in str(err):
                    continue  # some other CSV in the tree (e.g. keywords); not a caption file
                raise
        else:
            entries = _entries_from_captions_txt(caption_file)
        if non_radiology:
            # ROCO ships a non-radiology subset (photos, charts) beside the radiology one; it is not
            # report-generation data. Counted, not silently ignored.
            result.skip("ROCO non-radiology subset", caption_file.relative_to(root).as_posix(), count=len(entries))
            continue
        split, image_dir = _split_from_path(caption_file, root), _image_dir(caption_file, root)
        for roco_id, name, caption in entries:
            if not roco_id:
                result.skip("caption row without id or image name", caption_file.name)
                continue
            if roco_id in seen:
                result.skip("duplicate ROCO id", roco_id)
                continue
            image = path_under(image_dir, name) if name else None
            if name and image is None:
                result.skip(OUTSIDE_ROOT, roco_id)
                continue
            seen.add(roco_id)
            caption = " ".join(caption.split())
            result.studies.append(
                Study(
                    study_id=roco_id, subject_id=roco_id,
                    images=[ImageRef(image, "UNKNOWN")] if image else [],
                    sections={"findings": caption} if caption else {},
                    split=split, source="roco", meta={"caption_file": caption_file.relative_to(root).as_posix()},
                )
            )
    return result
