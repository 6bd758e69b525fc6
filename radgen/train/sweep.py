"""`radgen sweep`: grid search scored by validation loss after a fixed number of steps.

Seed 000's protocol: every combination of r ∈ {4, 8, 16}, alpha ∈ {16, 32}, dropout, lr is trained
for 250 steps and ranked by validation loss. Each trial is an ordinary run folder
(`SWEEP/trial-003/`), so a trial can be inspected, plotted or resumed like any run; a trial with
a `train_summary.json` is finished and is reused when the sweep is restarted.

Trials run one after another in this process, or — with `gpus=["0", "1", ...]` — as one
`radgen train` subprocess per GPU (CUDA_VISIBLE_DEVICES), each GPU taking the next trial when free.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from radgen.config import load_recipe, parse_override
from radgen.errors import ConfigError
from radgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from radgen.train.run_log import read_metrics

log = logging.getLogger(__name__)


def parse_grid(specs: list[str]) -> list[tuple[str, list[Any]]]:
    """['model.peft.r=4,8', 'train.optim.lr=1e-4,3e-4'] → [('model.peft.r', [4, 8]), ...] (values parsed like overrides)."""
    grid = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--grid '{spec}' is not KEY=V1,V2,... (e.g. model.peft.r=4,8,16)")
        key, values = spec.split("=", 1)
        parsed = [parse_override(f"{key}={value}")[1] for value in values.split(",") if value.strip()]
        if not parsed:
            raise ConfigError(f"--grid '{spec}' lists no values")
        grid.append((key.strip(), parsed))
    return grid


def trial_overrides(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    keys = [key for key, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*[values for _, values in grid])]


def _as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


def _trial_score(run_dir: Path) -> dict[str, Any] | None:
    summary = run_dir / "train_summary.json"
    if not summary.is_file():
        return None
    evals = [r for r in read_metrics(run_dir) if r.get("kind") == "eval" and isinstance(r.get("val_loss"), (int, float))]
    trains = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    result = json.loads(summary.read_text())
    return {
        "val_loss": evals[-1]["val_loss"] if evals else float("nan"),  # after the last step, not the best along the way
        "train_loss": trains[-1]["loss"] if trains else float("nan"),
        "steps": result["global_step"],
        "skipped_steps": result["skipped_steps"],
        "seconds": round(result["seconds"], 1),
    }


def run_sweep(
    config: str,
    grid_specs: list[str],
    overrides: list[str] | None = None,
    size: str | None = None,
    steps: int = 250,
    output_dir: str | Path | None = None,
    gpus: list[str] | None = None,
    progress: bool = True,
    model_factory: Any = None,
    **trainer_kwargs: Any,
) -> Path:
    """Run the grid; write SWEEP/sweep.csv, sweep.md (ranked table) and sweep.png; return the .md path."""
    from radgen.train.trainer import Trainer

    grid = parse_grid(grid_specs)
    base = list(overrides or [])
    # Score = val loss after `steps`: evaluate once at the end, skip generation and early stopping.
    fixed = [f"train.eval_every={steps}", "train.eval_generate=0", "train.early_stopping_patience=null", f"train.save_every={steps}"]
    base_recipe = load_recipe(config, base + fixed, size=size)  # fail fast on a bad base config
    trials = trial_overrides(grid)
    root = Path(output_dir or Path("runs") / f"sweep-{Path(config).stem}")
    if base_recipe.train.feature_cache_dir is None:
        # one store for all trials: a frozen encoder is encoded once per sweep, not once per trial
        fixed.append(f"train.feature_cache_dir={(root / 'feature_cache').resolve()}")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "sweep.json", {"config": config, "size": size, "steps": steps, "overrides": base, "grid": grid_specs, "trials": trials})
    for trial in trials:  # validate every combination before spending compute
        load_recipe(config, base + fixed + [_as_override(k, v) for k, v in trial.items()], size=size)

    dirs = [root / f"trial-{i:03d}" for i in range(len(trials))]
    todo = [i for i, d in enumerate(dirs) if _trial_score(d) is None]
    log.info("sweep %s: %d trials (%d already done), %d steps each", root, len(trials), len(trials) - len(todo), steps)
    if gpus:
        _run_parallel(config, size, base + fixed, trials, dirs, todo, steps, gpus)
    else:
        for number, i in enumerate(todo, start=1):
            trial_args = base + fixed + [_as_override(k, v) for k, v in trials[i].items()]
            log.info("trial %d/%d: %s", number, len(todo), " ".join(trial_args[len(base) + len(fixed) :]))
            recipe = load_recipe(config, trial_args, size=size)
            Trainer(recipe, dirs[i], resume=(dirs[i] / "checkpoints").is_dir(), max_steps=steps, progress=progress,
                    model_factory=model_factory, **trainer_kwargs).train()

    rows = []
    for i, trial in enumerate(trials):
        score = _trial_score(dirs[i])
        if score is None:
            raise ConfigError(f"{dirs[i]}: trial did not finish; see its log, then rerun the sweep (finished trials are reused)")
        rows.append({"trial": dirs[i].name, **{k: trial[k] for k in trial}, **score})
    rows.sort(key=lambda r: (r["val_loss"] != r["val_loss"], r["val_loss"]))  # NaN last
    return _write_tables(root, rows, [k for k, _ in grid])


def _run_parallel(config: str, size: str | None, fixed: list[str], trials: list[dict], dirs: list[Path], todo: list[int], steps: int, gpus: list[str]) -> None:
    """One `radgen train` subprocess per GPU; a GPU picks the next trial as soon as it is free.

    Not exercised by the test suite (CI has no GPUs); the command line per trial is the tested one.
    """
    queue = list(todo)
    running: dict[str, tuple[subprocess.Popen, int, Any]] = {}
    failed = []
    while queue or running:
        for gpu in gpus:
            if gpu not in running and queue:
                i = queue.pop(0)
                dirs[i].mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "radgen", "train", config, *fixed, *[_as_override(k, v) for k, v in trials[i].items()],
                       "--output-dir", str(dirs[i]), "--max-steps", str(steps), "--no-progress"]
                if size:
                    cmd += ["--size", size]
                if (dirs[i] / "checkpoints").is_dir():
                    cmd.append("--resume")
                handle = open(dirs[i] / "train.log", "a")
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
                running[gpu] = (subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env), i, handle)
                log.info("trial %s on GPU %s", dirs[i].name, gpu)
        for gpu, (proc, i, handle) in list(running.items()):
            if proc.poll() is not None:
                handle.close()
                del running[gpu]
                if proc.returncode != 0:
                    failed.append(dirs[i].name)
                    log.error("trial %s failed (exit %d); see %s", dirs[i].name, proc.returncode, dirs[i] / "train.log")
        time.sleep(1.0)
    if failed:
        raise ConfigError(f"sweep trials failed: {', '.join(failed)}; see their train.log, then rerun the sweep")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _write_tables(root: Path, rows: list[dict], grid_keys: list[str]) -> Path:
    columns = list(rows[0].keys())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "sweep.csv", buffer.getvalue())
    lines = ["| rank | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for rank, row in enumerate(rows, start=1):
        lines.append(f"| {rank} | " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    atomic_write_text(root / "sweep.md", "\n".join(lines) + "\n")
    _plot(root, rows, grid_keys)
    return root / "sweep.md"


def _plot(root: Path, rows: list[dict], grid_keys: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k.split('.')[-1]}={r[k]}" for k in grid_keys) for r in rows]
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    axis.barh(range(len(rows)), [r["val_loss"] for r in rows])
    axis.set_yticks(range(len(rows)), labels, fontsize=8)
    axis.invert_yaxis()  # best on top
    axis.set_xlabel(f"val loss after {rows[0]['steps']} steps")
    finite = [r["val_loss"] for r in rows if r["val_loss"] == r["val_loss"]]
    if finite:
        axis.set_xlim(min(finite) * 0.98, max(finite) * 1.01)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(root / "sweep.png", buffer.getvalue())
