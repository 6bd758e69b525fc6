"""What every dataset adapter shares: the result record, view names, splits and the prepare steps.

An adapter only PARSES its format into `Study` records (absolute image paths, sections, labels,
split when the dataset has one) and counts what it could not parse. The steps every format needs
afterwards — view filter, image existence check, section filter, split assignment — live here and
run in `prepare()` (radgen.data.adapters), so each behaves the same for every dataset.

Nothing is ever dropped silently: every study removed is counted in `AdapterResult.skipped` under a
reason, and every change that keeps the study (e.g. an image file missing) in `AdapterResult.notes`.
"""

from __future__ import annotations

import csv
import io
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from radgen.data.study import SPLITS, VIEWS, Study
from radgen.errors import DataError

MAX_EXAMPLES = 2  # example file names kept per reason, for the warning lines


@dataclass
class AdapterResult:
    """Studies parsed from a dataset plus a report of everything that was dropped or changed."""

    studies: list[Study] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of studies dropped
    notes: Counter = field(default_factory=Counter)  # reason -> number of studies kept but changed
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few offending ids/files

    def skip(self, reason: str, example: str | None = None, count: int = 1) -> None:
        self.skipped[reason] += count
        self._example(reason, example)

    def note(self, reason: str, example: str | None = None, count: int = 1) -> None:
        self.notes[reason] += count
        self._example(reason, example)

    def _example(self, reason: str, example: str | None) -> None:
        if example is not None:
            bucket = self.examples.setdefault(reason, [])
            if len(bucket) < MAX_EXAMPLES:
                bucket.append(example)

    def report_lines(self) -> list[str]:
        """One line per reason: 'warning: skipped N studies: reason (e.g. ...)' or 'note: N ...'.

        Skips and missing images are warnings; other notes (splits assigned, labels attached) are not.
        """
        lines = []
        for reason, count in sorted(self.skipped.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"warning: skipped {count} studies: {reason}{self._examples(reason)}")
        for reason, count in sorted(self.notes.items(), key=lambda item: (-item[1], item[0])):
            if reason.startswith("text-only"):
                fix = "put the images at those paths, or " if "missing" in reason else ""
                lines.append(
                    f"warning: {count} studies kept as text-only ({reason.removeprefix('text-only: ')}){self._examples(reason)}; "
                    f"{fix}pass --require-images to drop such studies"
                )
            elif "missing" in reason:
                lines.append(f"warning: {count} studies: {reason}{self._examples(reason)}")
            else:
                lines.append(f"note: {count} studies: {reason}{self._examples(reason)}")
        return lines

    def _examples(self, reason: str) -> str:
        examples = self.examples.get(reason)
        return f" (e.g. {', '.join(examples)})" if examples else ""


# ---------------------------------------------------------------------------------------------
# Small parsing helpers shared by the adapters
# ---------------------------------------------------------------------------------------------

_VIEW_ALIASES = {
    "PA": "PA",
    "POSTEROANTERIOR": "PA",
    "AP": "AP",
    "ANTEROPOSTERIOR": "AP",
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
    "LL": "LL",
    "LEFT LATERAL": "LL",
    "FRONTAL": "FRONTAL",
}


def canonical_view(value: str | None) -> str:
    """Map a dataset's view spelling (MIMIC ViewPosition, IU projection, ...) onto `VIEWS`."""
    if value is None:
        return "UNKNOWN"
    key = " ".join(str(value).strip().upper().split())
    return _VIEW_ALIASES.get(key, "UNKNOWN")


def parse_views(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Parse a --views value such as "PA,AP"; None/empty means all views."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    views = tuple(item.strip().upper() for item in items if item.strip())
    unknown = [view for view in views if view not in VIEWS]
    if unknown:
        raise DataError(f"unknown view(s) {', '.join(unknown)}; use names from {', '.join(VIEWS)}")
    return views or None


def parse_split_ratio(value: str | Sequence[float] | None, flag: str = "--split-ratio") -> tuple[float, float, float]:
    """Parse "0.8,0.1,0.1" into (train, val, test) fractions that sum to 1."""
    if value is None:
        return (0.8, 0.1, 0.1)
    try:
        parts = [float(part) for part in (value.split(",") if isinstance(value, str) else value)]
    except ValueError:
        raise DataError(f"{flag} {value!r} is not three numbers; write it like 0.8,0.1,0.1") from None
    if len(parts) != 3 or any(part < 0 for part in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise DataError(f"{flag} {value!r} must be three non-negative numbers summing to 1, like 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


def canonical_split(value: str | None) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    key = {"validate": "val", "validation": "val", "valid": "val", "dev": "val"}.get(key, key)
    return key if key in SPLITS else None


def read_text_file(path: Path) -> str:
    """Read a CSV/JSON/XML/text file as UTF-8 with a one-line error when it is not."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check --root and the dataset layout") from None
    if path.suffix == ".gz":
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a valid gzip file ({err}); download it again") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 text (byte {err.start}); convert the file to UTF-8") from None


def read_csv_rows(path: Path, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """Read a CSV (optionally .gz) into dicts; every malformed row is a one-line DataError.

    Strict on purpose: an unterminated quote would otherwise swallow the rest of the file into one
    field, a ragged row shifts values into the wrong columns and a repeated header keeps only one of
    its columns, all silently.
    """
    reader = csv.reader(io.StringIO(read_text_file(path), newline=""), strict=True)
    rows: list[dict[str, str]] = []
    started = 1
    try:
        header = next(reader, None) or []
        missing = [name for name in required if name not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(set(header))) or 'none'}")
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise DataError(f"{path}: line 1: column(s) {', '.join(map(repr, duplicated))} appear more than once in the header; rename or drop the duplicates")
        started = reader.line_num + 1
        for record in reader:
            if record and len(record) != len(header):
                raise DataError(
                    f"{path}: line {started}: {len(record)} fields, the header has {len(header)}; "
                    "fix that row (a comma or line break inside a field needs double quotes around the field)"
                )
            if record:
                rows.append(dict(zip(header, record)))
            started = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {started}: malformed CSV ({err}); check the double quotes in that row") from None
    return rows


def path_under(base: Path, name: str, allow_absolute: bool = False) -> str | None:
    """`name` joined to `base`, or None when it leaves `base` ("../..", or absolute unless allowed).

    Lexical (no symlinks resolved): a dataset may link its image folder elsewhere, but a path
    written in a manifest may not climb out of it.
    """
    if os.path.isabs(name):
        return os.path.normpath(name) if allow_absolute else None
    joined = os.path.normpath(os.path.join(os.path.abspath(base), name))
    return joined if Path(joined).is_relative_to(os.path.abspath(base)) else None


OUTSIDE_ROOT = "image path outside the dataset folder (refused)"


def first_existing_dir(candidates: Iterable[Path]) -> Path | None:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# The shared prepare steps
# ---------------------------------------------------------------------------------------------


def filter_views(result: AdapterResult, views: Sequence[str] | None) -> None:
    """Keep only images whose view is in `views`; drop studies left with no image."""
    if not views:
        return
    wanted = set(views)
    kept = []
    for study in result.studies:
        if not study.images:
            kept.append(study)  # text-only studies have no view to filter on
            continue
        images = [ref for ref in study.images if ref.view in wanted]
        if not images:
            result.skip(f"no image with view in {','.join(views)}", study.study_id)
            continue
        if len(images) < len(study.images):
            result.note("images of other views removed", study.study_id)
        study.images = images
        kept.append(study)
    result.studies = kept


def check_images(result: AdapterResult, require_images: bool) -> None:
    """Remove image refs whose file does not exist (kept as {path, view} in meta['missing_images']).

    A study left with no image is kept as a text-only study (counted), or dropped when
    `require_images` is set (e.g. to build MIMIC "valid image-findings pairs").
    """
    kept = []
    # One stat() per image: minutes on a network drive for MIMIC's 377k images, so show progress.
    for study in tqdm(result.studies, desc="checking image files", unit="study", disable=None):
        had_images = bool(study.images)
        present = [ref for ref in study.images if os.path.isfile(ref.path)]
        missing = [ref.path for ref in study.images if not os.path.isfile(ref.path)]
        if missing:
            # Kept with their views, so stats still describe the study and the refs can be restored.
            study.meta["missing_images"] = [ref.to_dict() for ref in study.images if not os.path.isfile(ref.path)]
            study.images = present
        if study.images:
            if missing:
                result.note("image files missing (study kept with the others)", missing[0])
            kept.append(study)
        elif require_images:
            result.skip("no image file found" if had_images else "study lists no images", missing[0] if missing else study.study_id)
        else:
            result.note(
                "text-only: image files missing" if had_images else "text-only: study lists no images",
                missing[0] if missing else study.study_id,
            )
            kept.append(study)
    result.studies = kept


def filter_sections(result: AdapterResult, section: str | None) -> None:
    """Drop studies without report text: any text when `section` is None, else that section."""
    kept = []
    for study in result.studies:
        if section is None:
            ok = bool(study.findings.strip() or study.impression.strip())
            reason = "no findings or impression text"
        else:
            ok = bool(study.report(section).strip())
            reason = f"empty {section}"
        if ok:
            kept.append(study)
        else:
            result.skip(reason, study.study_id)
    result.studies = kept


def assign_splits(studies: list[Study], ratio: Sequence[float], seed: int) -> int:
    """Give studies without a split one of train/val/test, grouped by subject; returns how many.

    All studies of a subject land in the same split (no patient leaks across splits). Subjects are
    sorted, shuffled with `random.Random(seed)` and cut at the cumulative ratio, so the result
    depends only on the subject ids, the ratio and the seed — not on file order.
    """
    todo = [study for study in studies if study.split is None]
    if not todo:
        return 0
    groups = sorted({study.subject_id or f"study:{study.study_id}" for study in todo})
    random.Random(seed).shuffle(groups)
    n_train = round(len(groups) * ratio[0])
    n_val = round(len(groups) * (ratio[0] + ratio[1])) - n_train
    split_of = {}
    for index, group in enumerate(groups):
        split_of[group] = "train" if index < n_train else "val" if index < n_train + n_val else "test"
    for study in todo:
        study.split = split_of[study.subject_id or f"study:{study.study_id}"]
    return len(todo)


def relativize_paths(studies: list[Study], manifest_dir: str | os.PathLike) -> None:
    """Store image paths under the manifest's folder relative to it, so the pair can move together."""
    base = Path(os.path.abspath(manifest_dir))
    for study in studies:
        for ref in study.images:
            path = Path(os.path.abspath(ref.path))
            if path.is_relative_to(base):
                ref.path = path.relative_to(base).as_posix()
