"""Run logs: RUN/metrics.jsonl (one JSON row per log step or evaluation), TensorBoard events, and
RUN/run_info.json (package versions, device, git commit: what a result needs to be reproduced;
`radgen evaluate` puts the same record in scores.json).

metrics.jsonl is appended to (one flushed line per row) rather than rewritten atomically on every
step: rewriting a growing file each log step costs O(rows²) I/O on long runs. What a crash can
leave — a torn last line, rows logged after the checkpoint we resume from — is repaired by
`MetricsLog(resume_step=N)`, which atomically rewrites the file keeping only complete rows with
step <= N. TensorBoard gets `purge_step=N` for the same reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from radgen.io import atomic_open, atomic_write_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "timm", "numpy")


def _git_commit(package: Path) -> dict[str, Any] | None:
    """Commit of the radgen checkout this code runs from (and whether it had uncommitted changes).

    None for an installed (non-editable) radgen: a site-packages folder inside some other
    repository must not report that repository's commit, so the checkout's top level has to be
    the folder that holds this `radgen` package.
    """
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=5)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != package.parent.resolve():
            return None
        commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _default_device() -> str:
    # Only asks torch if it is already loaded: `radgen evaluate` with n-gram metrics never imports it.
    torch = sys.modules.get("torch")
    if torch is None:
        return "cpu (torch not loaded)"
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"


def run_info(device: str | None = None) -> dict[str, Any]:
    """Versions of radgen, Python and the ML packages, the device, the git commit and the command line."""
    from importlib import metadata

    from radgen.version import __version__

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "radgen": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": device or _default_device(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "git": _git_commit(Path(__file__).resolve().parents[1]),
        "command": sys.argv,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of RUN/metrics.jsonl; a torn last line (crash mid-write) is ignored."""
    path = Path(run_dir) / METRICS_FILE
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it visible instead of crashing the log
    return value


class MetricsLog:
    """RUN/metrics.jsonl + TensorBoard; also (re)writes RUN/run_info.json at every start or resume."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, resume_step: int | None = None, tensorboard: bool = True,
                 device: str | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.writer = None
        self._handle = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [row for row in read_metrics(run_dir) if resume_step is not None and row.get("step", 0) <= resume_step]
        with atomic_open(self.path, "w") as handle:  # a fresh run starts empty; a resumed one keeps rows <= resume_step
            for row in kept:
                handle.write(json.dumps(row) + "\n")
        self._handle = open(self.path, "a", encoding="utf-8")
        atomic_write_json(Path(run_dir) / RUN_INFO_FILE, {**run_info(device), "resumed_from_step": resume_step})
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is the optional [train] extra; metrics.jsonl has every value
                log.info("tensorboard is not installed (pip install 'radgen[train]'); logging to %s only", self.path)
                return
            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step + 1 if resume_step is not None else None)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: _clean(v) for k, v in row.items()}
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()
        if self.writer is not None:
            kind = row.get("kind", "train")
            for key, value in row.items():
                if key in ("step", "epoch", "kind", "stage") or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                self.writer.add_scalar(f"{kind}/{key}", value, row["step"])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
