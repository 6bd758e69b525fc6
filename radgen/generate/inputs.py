"""What `radgen generate INPUT` reads: one image, a folder of images (recursed) or a manifest.

* an image file (PNG, JPEG, 16-bit PNG, DICOM): one study, its id the file name;
* a folder: every readable image below it is one study, its id the path relative to the folder
  (`patient1/view1.dcm`); hidden files and folders are ignored, and every other file is counted
  by reason ("not PNG/JPEG/DICOM", "empty file", "DICOM without pixel data", "corrupt or
  undecodable") instead of stopping the run;
* a manifest (`.jsonl`, from `radgen data prepare`): its studies, image paths relative to its folder.

File types are recognised by their leading bytes (PNG/JPEG magic, DICOM's "DICM" at byte 128), so
DICOM files without a suffix, as PACS exports often are, are found too; a `.dcm` suffix also counts
(raw DICOM datasets have no preamble).
"""

from __future__ import annotations

import os
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
    from radgen.data.images import decode_image

    try:
        data = path.read_bytes()
    except OSError:
        return CORRUPT
    if not data:
        return EMPTY
    if not _looks_like_image(data[:132], path):
        return NOT_AN_IMAGE
    try:
        decode_image(data, path)
    except DataError as err:
        return NO_PIXELS if "no PixelData" in str(err) else CORRUPT
    return None


def _image_files(folder: Path):
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory) / name


def collect_inputs(path: str | os.PathLike) -> Inputs:
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
    studies, skipped = [], Counter()
    for file in _image_files(path):
        reason = check_image(file)
        if reason is not None:
            skipped[reason] += 1
            continue
        relative = file.relative_to(path).as_posix()
        studies.append(Study(study_id=relative, images=[ImageRef(path=relative)]))
    inputs = Inputs(studies, path, "folder", skipped)
    if not studies:
        raise DataError(f"{path}: no readable PNG/JPEG/DICOM image in this folder or below"
                        f"{'; ' + inputs.skipped_text() if skipped else ''}; pass a folder of radiographs or a manifest .jsonl")
    return inputs
