"""Run logs: RUN/metrics.jsonl (one JSON row per log step or evaluation) and TensorBoard events.

metrics.jsonl is appended to (one flushed line per row) rather than rewritten atomically on every
step: rewriting a growing file each log step costs O(rows²) I/O on long runs. What a crash can
leave — a torn last line, rows logged after the checkpoint we resume from — is repaired by
`MetricsLog(resume_step=N)`, which atomically rewrites the file keeping only complete rows with
step <= N. TensorBoard gets `purge_step=N` for the same reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from radgen.io import atomic_open

METRICS_FILE = "metrics.jsonl"


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
    def __init__(self, run_dir: str | Path, enabled: bool = True, resume_step: int | None = None, tensorboard: bool = True):
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
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

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
