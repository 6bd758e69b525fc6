"""What a checkpoint's trainer_state.json says matches what the run did, counted independently.

The resume tests compare a resumed run with an uninterrupted one; both start from the same fresh
`TrainerState()`, so a wrong starting count (samples seen, skipped steps, the running loss window)
passes them. Here each saved state is checked against counts taken outside the trainer: the recipe's
stage lengths and batch size, the run log's eval rows, and the losses the model itself returned.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from radgen.train import checkpoint as ckpt
from radgen.train.run_log import read_metrics
from radgen.train.trainer import Trainer
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe

TRAIN_STUDIES, BATCH = 16, 4  # fake_recipe: batch_size 4, stages of 3 and 5 steps
STAGE_STEPS = (3, 5)
STEPS_PER_EPOCH = TRAIN_STUDIES // BATCH


class _LossRecorder(TinyReportGenerator):
    """The tiny model, recording every training-mode loss it returns (one forward per step here)."""

    losses: list[float] = []

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.training and out.loss is not None:
            _LossRecorder.losses.append(float(out.loss.detach()))
        return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.train.run_fake import collate

    torch.set_num_threads(1)
    _LossRecorder.losses = []
    run_dir = tmp_path_factory.mktemp("state") / "run"
    recipe = fake_recipe(**{"train.log_every": 2, "train.keep_checkpoints": 10})
    Trainer(recipe, run_dir, model_factory=_LossRecorder, train_dataset=FakeStudies(TRAIN_STUDIES),
            val_dataset=FakeStudies(4, prefix="v"), collate=collate, progress=False).train()
    return run_dir, list(_LossRecorder.losses)


def _expected_position(step: int) -> tuple[int, int, int, int]:
    """(stage_index, stage_step, epoch, step_in_epoch) after `step` optimizer steps."""
    done = 0
    for index, length in enumerate(STAGE_STEPS):
        if step < done + length:
            in_stage = step - done
            return index, in_stage, in_stage // STEPS_PER_EPOCH, in_stage % STEPS_PER_EPOCH
        done += length
        if step == done:  # a stage's last step moves the state to the next stage's start
            return index + 1, 0, 0, 0
    raise AssertionError(step)


def test_every_checkpoint_counts_steps_samples_and_position(run):
    run_dir, _ = run
    checkpoints = ckpt.list_checkpoints(run_dir)
    assert [int(p.name.split("-")[1]) for p in checkpoints] == [2, 3, 4, 6, 8]  # save_every 2 + stage ends
    for path in checkpoints:
        step = int(path.name.split("-")[1])
        state = ckpt.load_state(path)
        assert state.global_step == step
        assert state.samples_seen == step * BATCH
        assert state.skipped_steps == 0
        assert (state.stage_index, state.stage_step, state.epoch, state.step_in_epoch) == _expected_position(step), path.name
        assert state.stopped_early is False


def test_every_checkpoint_tracks_the_best_eval_of_the_log(run):
    run_dir, _ = run
    evals = [r for r in read_metrics(run_dir) if r["kind"] == "eval"]
    assert evals, "fake_recipe evaluates every 2 steps"
    for path in ckpt.list_checkpoints(run_dir):
        state = ckpt.load_state(path)
        seen = [r for r in evals if r["step"] <= state.global_step]
        best_index = min(range(len(seen)), key=lambda i: (seen[i]["val_loss"], i))  # first of equal values
        assert state.best_step == seen[best_index]["step"]
        assert state.best_metric == pytest.approx(seen[best_index]["val_loss"])
        assert state.bad_evals == len(seen) - 1 - best_index


def test_logged_training_loss_is_the_mean_of_the_models_losses(run):
    # log_every 2: each train row averages the losses of the steps since the previous row; a stage's
    # last step logs too (steps 2, 3 | 4, 6, 8 -> windows 1-2, 3, 4, 5-6, 7-8)
    run_dir, losses = run
    assert len(losses) == sum(STAGE_STEPS)
    rows = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    windows = {2: (1, 2), 3: (3, 3), 4: (4, 4), 6: (5, 6), 8: (7, 8)}
    assert [r["step"] for r in rows] == list(windows)
    for row in rows:
        first, last = windows[row["step"]]
        assert row["loss"] == pytest.approx(sum(losses[first - 1:last]) / (last - first + 1), rel=1e-6), row
        assert math.isfinite(row["loss"])


def test_a_fresh_state_file_round_trips_and_unknown_keys_are_ignored(tmp_path):
    state = ckpt.TrainerState(global_step=7, best_metric=0.5, trained_names=["a.weight"])
    data = json.loads(json.dumps(state.__dict__))
    data["written_by_a_newer_radgen"] = 1
    assert ckpt.TrainerState.from_json(data) == state
    with pytest.raises(TypeError, match="^expected a JSON object, got list$"):
        ckpt.TrainerState.from_json([1])
    with pytest.raises(TypeError, match=r"^field 'global_step' has str value '7'$"):
        ckpt.TrainerState.from_json({**data, "global_step": "7"})
    with pytest.raises(TypeError, match=rf"^field 'global_step' has str value '{'9' * 40}'$"):  # quoted up to 40 characters
        ckpt.TrainerState.from_json({"global_step": "9" * 50})


def test_checkpoint_files_are_the_documented_ones(run):
    # docs/training.md's run layout is what users (and their scripts) read
    run_dir, _ = run
    from pathlib import Path

    layout = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    listed = next(line for line in layout.splitlines() if line.startswith("RUN/checkpoints/step-N/"))
    documented = {name.strip(" []") for name in listed.split(None, 1)[1].split(",")} - {"scaler.pt"}  # fp16 only
    for path in ckpt.list_checkpoints(run_dir):
        assert {p.name for p in path.iterdir()} == documented, path


def test_a_run_without_validation_saves_no_best_and_no_bad_evals(tmp_path):
    from tests.train.run_fake import collate

    recipe = fake_recipe(**{"stages": [{"name": "connector", "train": ["connector"], "max_steps": 2, "lr": 3e-3}]})
    Trainer(recipe, tmp_path / "run", model_factory=TinyReportGenerator, train_dataset=FakeStudies(8),
            val_dataset=None, collate=collate, progress=False).train()
    state = ckpt.load_state(ckpt.list_checkpoints(tmp_path / "run")[-1])
    assert (state.best_metric, state.best_step, state.bad_evals) == (None, None, 0)
    assert (state.global_step, state.samples_seen) == (2, 2 * BATCH)


def test_state_fields_of_the_wrong_type_are_refused():
    for bad in ({"trained_names": ["a", 1]}, {"stopped_early": 1}, {"best_metric": "0.5"}, {"best_step": 1.5}):
        with pytest.raises(TypeError, match=f"field '{next(iter(bad))}'"):
            ckpt.TrainerState.from_json(bad)
    assert ckpt.TrainerState.from_json({"best_metric": 1, "stopped_early": True}).best_metric == 1  # an int is a float


def _save(run_dir, step: int, scaler=None, keep: int = 10):
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return ckpt.save_checkpoint(run_dir, ckpt.TrainerState(global_step=step), {"w": weight.detach()}, optimizer, scheduler,
                                scaler, [ckpt.capture_rng()], keep)


class _Scaler:  # what a fp16 run's GradScaler gives save_checkpoint
    def state_dict(self):
        return {"scale": torch.tensor(1024.0), "growth_tracker": 3}


def test_fp16_loss_scale_is_saved_and_checked(tmp_path):
    with_scaler, without = _save(tmp_path / "a", 1, scaler=_Scaler()), _save(tmp_path / "b", 1)
    assert ckpt.load_torch(with_scaler / "scaler.pt") == {"scale": torch.tensor(1024.0), "growth_tracker": 3}
    assert not (without / "scaler.pt").exists()
    assert ckpt.check_checkpoint(with_scaler).global_step == ckpt.check_checkpoint(without).global_step == 1
    (with_scaler / "scaler.pt").write_bytes(b"not a torch archive")
    with pytest.raises(Exception, match=rf"^{with_scaler / 'scaler.pt'}: unreadable \("):
        ckpt.check_checkpoint(with_scaler)


def test_only_complete_step_folders_are_checkpoints_in_step_order(tmp_path):
    for step in (10, 9, 100):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    (root / "best").mkdir()
    (root / "best" / ckpt.STATE_FILE).write_text("{}")  # a state file alone does not make a step folder
    (root / "step-11").mkdir()  # no state file: a folder being written by hand or a crashed copy
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-9", "step-10", "step-100"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-100"


def test_pruning_keeps_the_newest(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step, keep=0)  # 0: keep every checkpoint
    assert len(ckpt.list_checkpoints(tmp_path)) == 3
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-3"]


def test_cuda_generator_states_are_captured_and_restored_when_cuda_is_there(monkeypatch):
    # No GPU here: the CUDA calls are stood in for, to check that capture and restore wire them through.
    cuda_states, restored = [torch.tensor([1, 2, 3], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = ckpt.capture_rng()
    assert state["cuda"] is cuda_states
    ckpt.restore_rng(state)
    assert restored == [cuda_states]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU checkpoint resumed on a CPU machine
    ckpt.restore_rng(state)
    assert restored == [cuda_states]


def test_unreadable_files_are_one_line_errors_naming_the_file_and_the_fix(tmp_path):
    from radgen.errors import WeightsError

    path = _save(tmp_path, 4)
    (path / ckpt.STATE_FILE).write_text("{not json")
    with pytest.raises(WeightsError) as bad_state:
        ckpt.load_state(path)
    assert str(bad_state.value).startswith(f"{path / ckpt.STATE_FILE}: unreadable trainer state (")
    assert str(bad_state.value).endswith("); delete step-4 to resume from the previous checkpoint")
    weights = path / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(WeightsError) as bad_weights:
        ckpt.check_safetensors(weights)
    assert str(bad_weights.value).startswith(f"{weights}: unreadable safetensors file (")
    assert str(bad_weights.value).endswith("); the file is truncated or corrupt, copy or save it again")


def test_quoted_errors_are_one_line_and_at_most_200_characters():
    assert ckpt._one_line(ValueError("bad\n  header\tfield")) == "bad header field"
    assert ckpt._one_line(ValueError("x" * 200)) == "x" * 200
    assert ckpt._one_line(ValueError("x" * 201)) == "x" * 200 + "..."
    assert ckpt._one_line(KeyError()) == "KeyError"


def test_saved_tensors_are_the_trained_parameters_and_every_buffer():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    saved = ckpt.trainable_state(model, ["0.weight"])
    # 0.bias and the BatchNorm's affine weights are frozen here: rebuilt from the recipe, not saved
    assert set(saved) == {"0.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"}


def test_every_checkpoint_refusal_names_the_file_and_the_fix(tmp_path, caplog):
    import logging

    from radgen.errors import WeightsError

    older, newest = _save(tmp_path, 1), _save(tmp_path, 2)
    fix = "to resume from the previous checkpoint"
    (newest / "scheduler.pt").unlink()
    with pytest.raises(WeightsError, match=rf"^{newest / 'scheduler.pt'}: missing; delete step-2 {fix}$"):
        ckpt.check_checkpoint(newest)
    caplog.set_level(logging.WARNING)
    assert ckpt.resumable_checkpoint(tmp_path) == older
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint skipped: {newest / 'scheduler.pt'}: missing; delete step-2 {fix}",
        f"falling back to {older} (the newest checkpoint that reads back)"]
    (older / "trainable.safetensors").unlink()
    with pytest.raises(WeightsError, match=rf"^{older / 'trainable.safetensors'}: missing; delete step-1 {fix}$"):
        ckpt.check_checkpoint(older)
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'checkpoints'}: no checkpoint reads back \(2 tried; newest: {newest}"):
        ckpt.resumable_checkpoint(tmp_path)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickled_object_is_refused_naming_the_file_and_the_fix(tmp_path):
    from radgen.errors import WeightsError

    path = tmp_path / "step-3" / "optimizer.pt"
    path.parent.mkdir()
    torch.save({"state": _Payload()}, path)
    with pytest.raises(WeightsError, match=rf"^{path}: holds objects other than tensors and plain data \(refused: loading it "
                                           r"could run code\); delete step-3 to resume from the previous checkpoint$"):
        ckpt.load_torch(path)


def test_weights_that_do_not_fit_the_model_are_refused_with_the_callers_hint(tmp_path):
    from safetensors.torch import save_file

    from radgen.errors import WeightsError

    model = torch.nn.Linear(2, 2)
    (tmp_path / "a").mkdir()
    save_file({"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}, str(tmp_path / "a" / "trainable.safetensors"))
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'a' / 'trainable.safetensors'}: has weights the model lacks "
                                           r"\(e.g. 'extra'\); resume with the recipe that wrote it$"):
        ckpt.load_model_state(model, tmp_path / "a")
    (tmp_path / "b").mkdir()
    save_file({"weight": torch.zeros(3, 2)}, str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"'weight' has shape \(3, 2\), the model \(2, 2\); use the same recipe$"):
        ckpt.load_model_state(model, tmp_path / "b", hint="use the same recipe")
    with pytest.raises(WeightsError, match=rf"^{tmp_path}: no trainable.safetensors or model.safetensors; pass a checkpoint "
                                           r"folder \(RUN/checkpoints/step-N\) or a saved model \(RUN/best\)$"):
        ckpt.load_model_state(model, tmp_path)
