"""Atomic file writes and JSONL helpers.

Nothing radgen writes (manifests, checkpoints, predictions, scores) may be left half-written when a
run dies: every writer goes to a temporary file in the same directory and is renamed into place,
which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from radgen.errors import DataError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the permissions a plain open() would give them.
_FILE_MODE = 0o666 & ~_current_umask()
log = logging.getLogger(__name__)
# A writer killed mid-write (SIGKILL, power loss) leaves its ".NAME.<8 random>.tmp" behind. The next
# write of the same NAME removes such leftovers once they are this old: no write of one file takes
# an hour, so an older temporary belongs to no live writer.
STALE_TMP_SECONDS = 3600.0


def remove_stale_temporaries(path: str | os.PathLike, older_than: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete the temporaries a killed atomic write of `path` left (".NAME.xxxxxxxx.tmp", file or
    folder, older than `older_than` seconds); returns what went."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp$")
    now, removed = time.time(), []
    for entry in path.parent.iterdir():
        try:
            if pattern.match(entry.name) and now - entry.lstat().st_mtime > older_than:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                removed.append(entry)
        except FileNotFoundError:  # another writer cleaned it first
            continue
    if removed:
        log.info("removed %d leftover temporary file(s) of %s from a killed write", len(removed), path)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _FILE_MODE)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` (a directory) only when the block succeeds.

    The previous content of `path`, if any, stays intact until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        for item in tmp.rglob("*"):
            # writers that create their files owner-only (safetensors' save_file: 0600) get what a
            # plain open() gives, so a saved model can be shared as any other file
            if item.is_file() and not item.is_symlink() and stat.S_IMODE(item.stat().st_mode) == 0o600:
                os.chmod(item, _FILE_MODE)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically; return the number of rows written."""
    count = 0
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
    return count


def parse_jsonl(text: str, path: str | os.PathLike) -> list[dict]:
    """Parse JSONL text; a bad line raises a one-line DataError naming `path` and the line."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); fix or remove that line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a bad line raises a one-line DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path (expected a JSONL file, one JSON object per line)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
    return parse_jsonl(text, path)
