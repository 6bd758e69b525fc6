"""`radgen train` / `radgen plot` on the real tiny recipes (radgen.models.build_model) and generated studies."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from radgen.cli import main
from radgen.config import RECIPE_DIR
from radgen.models import ReportGenerator
from radgen.train.run_log import read_metrics
from radgen.train.trainer import KILL_ENV
from tests.train.imaging import write_studies

ROOT = Path(__file__).resolve().parents[2]
TINY_RECIPES = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if "tiny" in (yaml.safe_load(p.read_text()).get("sizes") or {}))
# A short, fast CPU schedule; each recipe keeps its own stages (what trains), with a higher LR because the
# tiny decoders start from random weights. fp32: several recipes ask for fp16, which needs a GPU.
FAST = ["train.batch_size=4", "train.grad_accum=1", "train.eval_every=4", "train.eval_generate=2", "generate.max_new_tokens=8",
        "generate.num_beams=1", "train.warmup_steps=1", "train.precision=fp32"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_studies(tmp_path_factory.mktemp("studies"), train=16, val=4)


@pytest.mark.parametrize("recipe", TINY_RECIPES)
def test_tiny_recipe_trains_and_val_loss_falls(recipe, manifest, tmp_path, capsys):
    run = tmp_path / "run"
    stages = len(yaml.safe_load((RECIPE_DIR / f"{recipe}.yaml").read_text()).get("stages") or [1])
    extra = [f"stages.{i}.lr=3e-3" for i in range(stages)] + ["stages.0.epochs=2"] + [f"stages.{i}.epochs=1" for i in range(1, stages)]
    code = main(["train", recipe, f"data.manifest={manifest}", *FAST, *extra, "--size", "tiny", "--output-dir", str(run), "--no-progress"])
    assert code == 0
    assert "trained" in capsys.readouterr().out
    evals = [r for r in read_metrics(run) if r["kind"] == "eval"]
    assert len(evals) >= 2 and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert {"bleu4", "rouge_l"} <= set(evals[-1])
    model = ReportGenerator.from_pretrained(run / "best")
    assert model.recipe.name.startswith(recipe)
    assert main(["plot", str(run)]) == 0
    assert (run / "plots" / "loss.png").stat().st_size > 1000 and (run / "plots" / "metrics.png").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "radgen-small", "--size", "tiny", "data.manifest=" + str(tmp_path / "missing.jsonl"), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.jsonl: manifest not found" in err
    assert main(["train", "radgen-small", "train.optim.lrr=1", "--output-dir", str(tmp_path / "r")]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_real_model_resume_after_sigkill(manifest, tmp_path):
    """LoRA and connector dropout active: resume must restore RNG, optimizer and data position exactly."""
    args = [sys.executable, "-m", "radgen", "train", "radgen-small", "--size", "tiny", f"data.manifest={manifest}", "--no-progress",
            "train.batch_size=4", "train.save_every=3", "train.eval_every=4", "train.log_every=1", "train.eval_generate=0", "stages.0.max_steps=8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)

    def run(out, *flags, kill=None):
        return subprocess.run([*args, "--output-dir", str(out), *flags], cwd=ROOT, capture_output=True, text=True, timeout=180,
                              env={**env, KILL_ENV: str(kill)} if kill else env)

    assert run(tmp_path / "full").returncode == 0
    assert run(tmp_path / "cut", kill=5).returncode == -signal.SIGKILL
    resumed = run(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    curve = lambda d: [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in read_metrics(d)]  # noqa: E731
    assert len(curve(tmp_path / "full")) == 10 and curve(tmp_path / "cut") == curve(tmp_path / "full")
