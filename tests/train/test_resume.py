"""Killing a run (SIGKILL) and resuming it gives exactly the losses of an uninterrupted run."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from radgen.errors import ConfigError
from radgen.train.checkpoint import list_checkpoints
from radgen.train.run_log import read_metrics
from radgen.train.trainer import KILL_ENV, Trainer
from tests.train import run_fake
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, *flags: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "tests.train.run_fake", str(out), *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _curve(run_dir: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss"), r.get("lr")) for r in read_metrics(run_dir)]


@pytest.mark.parametrize("kill_at,flags", [(5, ()), (3, ("--cache",))])
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, kill_at, flags):
    # kill_at=5: mid stage 2, one step after the step-4 checkpoint (the killed step is replayed);
    # kill_at=3 with the feature cache: at the stage boundary (new optimizer, cache rebuilt from disk).
    full, broken = tmp_path / "full", tmp_path / "broken"
    run_fake.main([str(full), *flags])  # the reference run in-process (one interpreter start less; 1 thread both ways)
    killed = _run(broken, *flags, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list_checkpoints(broken)[-1].name == {5: "step-4", 3: "step-3"}[kill_at]  # save_every=2; stage 1 ends at 3
    resumed = _run(broken, "--resume", *flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = _curve(full)
    assert len(reference) > 10 and any(kind == "eval" for kind, *_ in reference)
    assert _curve(broken) == reference  # bit-identical losses, val losses and learning rates


def test_refuses_to_overwrite_or_resume_with_other_recipe(tmp_path, fake_collate):
    def trainer(recipe, resume=False):
        return Trainer(recipe, tmp_path / "run", resume=resume, model_factory=TinyReportGenerator, train_dataset=FakeStudies(8),
                       val_dataset=[], collate=fake_collate, progress=False, max_steps=2)

    trainer(fake_recipe()).train()
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        trainer(fake_recipe()).train()
    with pytest.raises(ConfigError, match="different recipe"):
        trainer(fake_recipe(**{"train.optim.lr": 0.5}), resume=True).train()
