"""`radgen train` / `radgen plot` on the real tiny recipes (radgen.models.build_model) and generated studies."""

import signal
from pathlib import Path

import pytest
import torch
import yaml

from radgen.cli import main
from radgen.config import RECIPE_DIR
from radgen.models import ReportGenerator
from radgen.train.run_log import read_metrics
from radgen.train.trainer import KILL_ENV
from tests.train.imaging import write_studies

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


class _Killed(Exception):
    pass


def test_real_model_resume_after_kill(manifest, tmp_path, monkeypatch):
    """LoRA and connector dropout active: resume must restore RNG, optimizer and data position exactly.

    In-process to save three interpreter starts: the trainer's kill hook (os.kill(SIGKILL)) is made to
    raise instead; tests/train/test_resume.py does the real SIGKILL in a subprocess.
    """
    import radgen.train.trainer as trainer_module

    def fake_kill(pid, sig):
        assert sig == signal.SIGKILL
        raise _Killed

    args = ["train", "radgen-small", "--size", "tiny", f"data.manifest={manifest}", "--no-progress", "train.batch_size=4",
            "train.save_every=3", "train.eval_every=4", "train.log_every=1", "train.eval_generate=0", "stages.0.max_steps=8"]
    assert main([*args, "--output-dir", str(tmp_path / "full")]) == 0
    monkeypatch.setattr(trainer_module.os, "kill", fake_kill)
    monkeypatch.setenv(KILL_ENV, "5")
    with pytest.raises(_Killed):
        main([*args, "--output-dir", str(tmp_path / "cut")])
    monkeypatch.delenv(KILL_ENV)
    assert max(r["step"] for r in read_metrics(tmp_path / "cut")) == 5  # rows after the step-3 checkpoint exist
    assert main([*args, "--output-dir", str(tmp_path / "cut"), "--resume"]) == 0
    curve = lambda d: [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in read_metrics(d)]  # noqa: E731
    assert len(curve(tmp_path / "full")) == 10 and curve(tmp_path / "cut") == curve(tmp_path / "full")


def test_a_head_with_its_own_encoder_blocks_trains_from_pixels_and_says_why(manifest, tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="radgen.train.trainer"):
        code = main(["train", "radgen-small", f"data.manifest={manifest}", *FAST, "stages.0.max_steps=4", "train.eval_generate=0",
                     "model.findings.tune_encoder_blocks=2", "--size", "tiny", "--output-dir", str(run), "--no-progress"])
    assert code == 0
    assert "reads pixels" in caplog.text and "fit-findings" in caplog.text
    assert not (run / "feature_cache").exists()  # the cache would hold the encoder's output, which the tail cannot read
    trained = ReportGenerator.from_pretrained(run / "best")
    assert trained.findings.tail_blocks == 2
    # the head's blocks trained; the encoder the decoder reads did not
    fresh_encoder = trained.encoder.model
    assert any(not torch.equal(a, b) for a, b in zip(trained.findings.tail[0].parameters(), fresh_encoder.blocks[-2].parameters()))
