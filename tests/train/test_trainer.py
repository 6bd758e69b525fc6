"""Trainer behaviour on the test double: determinism, stages, NaN skip, early stopping, logs."""

import math

import pytest
import torch
from safetensors.torch import load_file

from radgen.train.checkpoint import load_state
from radgen.train.run_log import read_metrics
from radgen.train.trainer import Trainer
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe


def _train(tmp_path, collate, name="run", recipe=None, factory=TinyReportGenerator, **kwargs):
    trainer = Trainer(recipe or fake_recipe(), tmp_path / name, model_factory=factory, train_dataset=kwargs.pop("train", FakeStudies(20)),
                      val_dataset=kwargs.pop("val", FakeStudies(6, seed=1, prefix="v")), collate=collate, progress=False, **kwargs)
    return trainer.train()


def _losses(run_dir):
    return [row["loss"] for row in read_metrics(run_dir) if row["kind"] == "train"]


def test_same_seed_same_curve_other_seed_other_curve(tmp_path, fake_collate):
    _train(tmp_path, fake_collate, "a")
    _train(tmp_path, fake_collate, "b")
    _train(tmp_path, fake_collate, "c", recipe=fake_recipe(**{"train.seed": 1}))
    _train(tmp_path, fake_collate, "d", recipe=fake_recipe(**{"train.num_workers": 1}))  # batches from a worker process
    a, b, c, d = (_losses(tmp_path / name) for name in "abcd")
    assert len(a) == 8 and a == b == d
    assert a != c


def test_stages_train_only_their_parameters(tmp_path, fake_collate):
    models = []

    def factory(recipe):
        models.append(TinyReportGenerator(recipe))
        return models[-1]

    torch.manual_seed(0)
    result = _train(tmp_path, fake_collate, factory=factory)
    assert result.global_step == 8
    torch.manual_seed(0)  # the trainer seeds with train.seed=0 before building: same initial weights
    initial = TinyReportGenerator().state_dict()
    boundary = load_file(str(tmp_path / "run" / "checkpoints" / "step-4" / "trainable.safetensors"))  # stage 2 has begun
    stage1 = load_state(tmp_path / "run" / "checkpoints" / "step-4")
    assert {n.split(".")[0] for n in stage1.trained_names} == {"connector", "decoder"}
    final = models[0].state_dict()
    # the encoder never trains, and being frozen it stays in eval mode: BatchNorm statistics untouched
    for name in ("encoder.0.weight", "encoder.1.running_mean", "encoder.1.running_var"):
        assert torch.equal(final[name], initial[name]), name
    assert not torch.equal(final["connector.0.weight"], initial["connector.0.weight"])
    assert not torch.equal(final["decoder.head.weight"], initial["decoder.head.weight"])
    assert "encoder.0.weight" not in boundary


def test_stage_one_leaves_decoder_untouched(tmp_path, fake_collate):
    models = []
    recipe = fake_recipe(**{"stages": [{"name": "connector", "train": ["connector"], "max_steps": 3, "lr": 3e-3}]})
    _train(tmp_path, fake_collate, recipe=recipe, factory=lambda r: models.append(TinyReportGenerator(r)) or models[-1])
    torch.manual_seed(0)
    initial = TinyReportGenerator().state_dict()
    final = models[0].state_dict()
    assert torch.equal(final["decoder.head.weight"], initial["decoder.head.weight"])
    assert not torch.equal(final["connector.0.weight"], initial["connector.0.weight"])


def test_non_finite_loss_skips_the_step_and_is_counted(tmp_path, fake_collate):
    models = []
    recipe = fake_recipe(**{"train.eval_every": 100})

    def factory(r):
        models.append(TinyReportGenerator(r, nan_at_call=5))  # step 5 (stage 2): forward calls 1..4 are steps 1..4
        return models[-1]

    result = _train(tmp_path, fake_collate, recipe=recipe, factory=factory)
    assert result.skipped_steps == 1 and result.global_step == 8
    rows = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert rows[4]["loss"] == "nan" and rows[4]["skipped_steps"] == 1
    assert rows[5]["lr"] == rows[4]["lr"]  # the schedule does not advance on a skipped step
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(rows) if i != 4)
    assert all(torch.isfinite(p).all() for p in models[0].parameters())
    assert (tmp_path / "run" / "train_summary.json").is_file()


def test_early_stopping_and_best_checkpoint(tmp_path, fake_collate):
    # lr 0: the val loss cannot improve after the first evaluation, so patience 2 stops at the 3rd
    recipe = fake_recipe(**{"stages": [{"name": "s", "train": ["connector"], "max_steps": 20, "lr": 0.0}],
                            "train.early_stopping_patience": 2, "train.eval_every": 2})
    result = _train(tmp_path, fake_collate, recipe=recipe)
    assert result.stopped_early and result.global_step == 6 and result.best_step == 2
    evals = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "eval"]
    assert [r["best"] for r in evals] == [True, False, False]
    best = TinyReportGenerator.from_pretrained(tmp_path / "run" / "best")
    assert best.recipe.name == "fake"


def test_val_loss_falls_and_logs_are_written(tmp_path, fake_collate):
    recipe = fake_recipe(**{"stages": [{"name": "all", "train": ["connector", "decoder"], "max_steps": 30, "lr": 3e-3}],
                            "train.eval_every": 10, "train.log_every": 5})
    _train(tmp_path, fake_collate, recipe=recipe)
    rows = read_metrics(tmp_path / "run")
    evals = [r["val_loss"] for r in rows if r["kind"] == "eval"]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    for key in ("stage", "epoch", "loss", "lr", "samples_per_s"):
        assert key in train_rows[0]
    assert "bleu4" in rows[2] and "rouge_l" in rows[2]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_init_from_starts_a_new_run_from_earlier_weights(tmp_path, fake_collate):
    torch.manual_seed(123)  # other initial weights than the trainer's seed 0 gives
    saved = TinyReportGenerator()
    expected = {k: v.clone() for k, v in saved.state_dict().items()}
    saved.save_pretrained(tmp_path / "saved")
    seen = []

    def factory(recipe):
        seen.append(TinyReportGenerator(recipe))
        return seen[-1]

    _train(tmp_path, fake_collate, "second", recipe=fake_recipe(**{"train.init_from": str(tmp_path / "saved")}), factory=factory, max_steps=2)
    after = seen[0].state_dict()
    # stage 1 (3 steps) trains only the connector: everything else is exactly the saved weights
    for name in ("encoder.0.weight", "encoder.1.running_mean", "decoder.head.weight"):
        assert torch.equal(after[name], expected[name]), name
    assert not torch.equal(after["connector.0.weight"], expected["connector.0.weight"])

    # a checkpoint folder works too; weights of another shape are refused by name
    from radgen.errors import WeightsError
    from radgen.train.checkpoint import load_model_state

    assert load_model_state(TinyReportGenerator(), tmp_path / "second" / "checkpoints" / "step-2") > 0
    with pytest.raises(WeightsError, match="model.safetensors: has weights the model lacks"):
        load_model_state(torch.nn.Linear(3, 3), tmp_path / "saved")
    with pytest.raises(WeightsError, match="no trainable.safetensors or model.safetensors"):
        load_model_state(TinyReportGenerator(), tmp_path)


def test_length_buckets_train_on_the_same_examples_in_other_batches(tmp_path, fake_collate):
    from tests.train.fakes import REPORTS

    assert len({len(r) for r in REPORTS.values()}) > 1  # the fake reports differ in length
    _train(tmp_path, fake_collate, "plain")
    _train(tmp_path, fake_collate, "bucketed", recipe=fake_recipe(**{"train.length_buckets": 2}))
    plain, bucketed = _losses(tmp_path / "plain"), _losses(tmp_path / "bucketed")
    assert len(bucketed) == len(plain) and all(math.isfinite(x) for x in bucketed)
    assert bucketed != plain
    with pytest.raises(Exception, match="train.length_buckets must be >= 0"):
        _train(tmp_path, fake_collate, "bad", recipe=fake_recipe(**{"train.length_buckets": -1}))



def test_long_jobs_let_the_thread_count_follow_the_load(tmp_path, fake_collate, monkeypatch):
    # radgen.threads.rebalance_threads re-picks an automatic count between steps (tests/test_threads.py)
    calls = []
    monkeypatch.setattr("radgen.train.trainer.rebalance_threads", lambda: calls.append("step"))
    _train(tmp_path, fake_collate)
    assert len(calls) == 8  # once per optimizer step
