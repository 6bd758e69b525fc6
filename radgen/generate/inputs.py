"""What `radgen generate INPUT` reads: one image, a folder of images (recursed) or a manifest.

* an image file (PNG, JPEG, 16-bit PNG, DICOM): one study, its id the file name;
* a folder: every readable image below it is one study, its id the path relative to the folder
  (`patient1/view1.dcm`), except that a frontal and a lateral view of one study become one study
  (a grounded model's finding head reads both: on IU-Phantom test, finding micro-F1 0.91 with the
  lateral against 0.78 without; docs/benchmarks.md, "A folder of PA and lateral files"). A file's
  view comes from DICOM's ViewPosition, else from a word of its name (PA, AP, frontal; lateral, lat,
  LL); two views are one study when they are DICOM files with the same StudyInstanceUID, or files
  of one folder whose names are the same without the view word (`iu-3321_PA.png` and
  `iu-3321_LATERAL.png` → study `iu-3321`; `patient1/pa.png` and `patient1/lat.png` → `patient1`;
  a DICOM study keeps its frontal file's path as its id). `pair_views=False`
  (`--one-study-per-image`) keeps one study per file. Hidden files and folders are ignored, and
  every other file is counted by reason ("not PNG/JPEG/DICOM", "empty file", "DICOM without pixel
  data", "corrupt or undecodable") instead of stopping the run;
* a manifest (`.jsonl`, from `radgen data prepare`): its studies, image paths relative to its folder.

File types are recognised by their leading bytes (PNG/JPEG magic, DICOM's "DICM" at byte 128), so
DICOM files without a suffix, as PACS exports often are, are found too; a `.dcm` suffix also counts
(raw DICOM datasets have no preamble).
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from radgen.data.study import ImageRef, Study, read_manifest
from radgen.errors import DataError

MANIFEST_SUFFIXES = (".jsonl",)
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
NOT_AN_IMAGE = "not PNG/JPEG/DICOM"
EMPTY = "empty file"
NO_PIXELS = "DICOM without pixel data"
CORRUPT = "corrupt or undecodable"


@dataclass
class Inputs:
    """Studies to decode, the root their image paths are relative to, and skipped files by reason."""

    studies: list[Study]
    root: Path | None
    kind: str  # "image", "folder" or "manifest"
    skipped: Counter = field(default_factory=Counter)
    paired: int = 0  # folder studies made of a frontal and a lateral file

    def skipped_text(self) -> str:
        """'3 files skipped (2 not PNG/JPEG/DICOM, 1 corrupt or undecodable)' or ''."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"{total} file{'s' if total != 1 else ''} skipped ({reasons})"


def _looks_like_image(head: bytes, path: Path) -> bool:
    return (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff") or head[128:132] == b"DICM"
            or path.suffix.lower() in DICOM_SUFFIXES)


def check_image(path: Path) -> str | None:
    """None if `path` decodes as a radiograph, else the reason it does not (one of the constants above)."""
    return _read_image(path)[0]


def _read_image(path: Path) -> tuple[str | None, bytes]:
    """(check_image's answer, the file's bytes) for `path`."""
    from radgen.data.images import decode_image

    try:
        data = path.read_bytes()
    except OSError:
        return CORRUPT, b""
    if not data:
        return EMPTY, data
    if not _looks_like_image(data[:132], path):
        return NOT_AN_IMAGE, data
    try:
        decode_image(data, path)
    except DataError as err:
        return NO_PIXELS if "no PixelData" in str(err) else CORRUPT, data
    return None, data


# words of a file name that name its view; "ll" is left lateral, as in DICOM's ViewPosition
_NAME_VIEWS = {"pa": "PA", "ap": "AP", "frontal": "FRONTAL", "lateral": "LATERAL", "lat": "LATERAL", "ll": "LL"}
_LATERAL_VIEWS = ("LATERAL", "LL")


def view_from_name(name: str) -> tuple[str, str]:
    """(view, the name without its view word and that word's separator) from a file name:
    `iu-3321_PA.png` → ("PA", "iu-3321"); ("UNKNOWN", stem) where no word, or more than one, names a view."""
    parts = re.split(r"([^A-Za-z0-9]+)", Path(name).stem)  # words at even indices, separators between
    hits = [i for i in range(0, len(parts), 2) if parts[i].lower() in _NAME_VIEWS]
    if len(hits) != 1:
        return "UNKNOWN", Path(name).stem
    i = hits[0]
    rest = parts[: max(i - 1, 0)] + parts[i + 1:] if i else parts[i + 2:]
    return _NAME_VIEWS[parts[i].lower()], "".join(rest)


def _dicom_view_and_study(data: bytes) -> tuple[str, str | None]:
    """(ViewPosition as a canonical view, StudyInstanceUID) of a DICOM file that decoded; UNKNOWN / None where absent."""
    import pydicom

    from radgen.data.adapters.common import canonical_view

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True,
                             specific_tags=["ViewPosition", "StudyInstanceUID"])
    except Exception:  # noqa: BLE001 - the pixels decoded; a header without these tags just names no view
        return "UNKNOWN", None
    uid = str(ds.get("StudyInstanceUID", "") or "").strip() or None
    return canonical_view(ds.get("ViewPosition")), uid


def _file_view(relative: str, data: bytes) -> tuple[str, tuple]:
    """(view, the key that files of one study share) of a readable image."""
    view, rest = view_from_name(relative)
    if data[128:132] == b"DICM" or Path(relative).suffix.lower() in DICOM_SUFFIXES:
        dicom_view, uid = _dicom_view_and_study(data)
        view = dicom_view if dicom_view != "UNKNOWN" else view
        if uid is not None:
            return view, ("dicom", uid)
    return view, ("name", Path(relative).parent.as_posix(), rest.lower())


def _paired_studies(files: list[tuple[str, str, tuple]], folder: Path) -> list[Study]:
    """One study per file, except a group of files sharing a key with a frontal and a lateral view: one study."""
    groups: dict[tuple, list[ImageRef]] = {}
    for relative, view, key in files:
        groups.setdefault(key, []).append(ImageRef(path=relative, view=view))
    studies: list[Study] = []
    for key, refs in groups.items():
        frontal = [ref for ref in refs if ref.is_frontal]
        if not frontal or not any(ref.view in _LATERAL_VIEWS for ref in refs):
            studies += [Study(study_id=ref.path, images=[ref]) for ref in refs]
            continue
        if key[0] == "name":
            parent = Path(frontal[0].path).parent.as_posix()
            rest = view_from_name(frontal[0].path)[1]
            study_id = "/".join(part for part in (parent if parent != "." else "", rest) if part) or folder.name
        else:
            study_id = frontal[0].path
        studies.append(Study(study_id=study_id, images=frontal + [ref for ref in refs if not ref.is_frontal]))
    return studies


def _image_files(folder: Path):
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory) / name


def collect_inputs(path: str | os.PathLike, pair_views: bool = True) -> Inputs:
    """Studies for an image file, a folder of images or a manifest JSONL (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found; pass an image (PNG/JPEG/DICOM), a folder of images or a manifest .jsonl")
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return Inputs(read_manifest(path), path.parent, "manifest")
    if path.is_file():
        reason = check_image(path)
        if reason is not None:
            raise DataError(f"{path}: cannot read it as a radiograph ({reason}); pass a PNG, JPEG or DICOM image, "
                            "a folder of them or a manifest .jsonl")
        return Inputs([Study(study_id=path.name, images=[ImageRef(path=path.name)])], path.parent, "image")
    files, skipped = [], Counter()
    for file in _image_files(path):
        reason, data = _read_image(file)
        if reason is not None:
            skipped[reason] += 1
            continue
        relative = file.relative_to(path).as_posix()
        view, key = _file_view(relative, data) if pair_views else ("UNKNOWN", (relative,))
        files.append((relative, view, key))
    studies = _paired_studies(files, path)
    inputs = Inputs(studies, path, "folder", skipped, paired=sum(len(s.images) > 1 for s in studies))
    if not studies:
        raise DataError(f"{path}: no readable PNG/JPEG/DICOM image in this folder or below"
                        f"{'; ' + inputs.skipped_text() if skipped else ''}; pass a folder of radiographs or a manifest .jsonl")
    return inputs
