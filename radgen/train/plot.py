"""`radgen plot RUN_DIR`: loss and validation-metric curves from RUN/metrics.jsonl as PNG files."""

from __future__ import annotations

import io
from pathlib import Path

from radgen.errors import DataError
from radgen.io import atomic_write_bytes
from radgen.train.run_log import METRICS_FILE, read_metrics

METRIC_KEYS = ("bleu4", "rouge_l")


def _save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _numeric(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [s for s, _ in points], [v for _, v in points]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write loss.png (train + val loss, stage boundaries) and, when logged, metrics.png; return the paths."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers/CI
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise DataError(f"{run_dir / METRICS_FILE}: no metrics rows; is {run_dir} a radgen run folder?")
    out = Path(out_dir) if out_dir else run_dir / "plots"
    train_rows = [r for r in rows if r.get("kind") == "train"]
    eval_rows = [r for r in rows if r.get("kind") == "eval"]
    written = []

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(*_numeric(train_rows, "loss"), label="train loss", linewidth=1)
    steps, values = _numeric(eval_rows, "val_loss")
    if steps:
        axis.plot(steps, values, "o-", label="val loss")
    previous = None
    for row in train_rows:  # dashed line where a new stage starts
        if previous is not None and row.get("stage") != previous:
            axis.axvline(row["step"], color="grey", linestyle="--", linewidth=0.8)
            axis.text(row["step"], axis.get_ylim()[1], f" {row.get('stage')}", va="top", fontsize=8, color="grey")
        previous = row.get("stage")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(run_dir.name)
    axis.legend()
    written.append(_save(figure, out / "loss.png"))
    plt.close(figure)

    present = [k for k in METRIC_KEYS if _numeric(eval_rows, k)[0]]
    if present:
        figure, axis = plt.subplots(figsize=(7, 4))
        for key in present:
            axis.plot(*_numeric(eval_rows, key), "o-", label=key)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("score (val sample)")
        axis.set_title(f"{run_dir.name}: generated val reports")
        axis.legend()
        written.append(_save(figure, out / "metrics.png"))
        plt.close(figure)
    return written
