"""2-process DDP on CPU (gloo, launched by torchrun) follows the single-process run with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radgen.train.run_log import read_metrics
from tests.train import run_fake

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("RADGEN_TEST_KILL_AT_STEP", None)
    return env


def test_two_process_ddp_matches_single_process_with_accumulation(tmp_path):
    # global batch 4 both ways: 2 ranks x batch 2, or 1 process x batch 2 x 2 accumulation steps.
    # Dropout off: the two layouts draw random masks in a different order by design.
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    args = ["-m", "tests.train.run_fake"]
    run_fake.main([str(single), "--no-dropout", "--batch=2", "--accum=2"])  # in-process, 1 thread like the ranks
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args, str(ddp), "--no-dropout", "--batch=2", "--accum=1"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    reference, distributed = read_metrics(single), read_metrics(ddp)
    assert [(r["kind"], r["step"]) for r in distributed] == [(r["kind"], r["step"]) for r in reference]
    pairs = [(a.get("loss", a.get("val_loss")), b.get("loss", b.get("val_loss"))) for a, b in zip(reference, distributed)]
    assert len(pairs) > 10
    for expected, got in pairs:
        assert got == pytest.approx(expected, abs=1e-5)
    assert all(r["samples_per_s"] > 0 for r in distributed if r["kind"] == "train")
    assert (ddp / "best" / "model.safetensors").is_file() and (ddp / "checkpoints" / "step-8" / "rng.pt").is_file()
