"""Checkpoints are data, never code; a corrupt newest checkpoint falls back to the previous one, saying so."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from radgen.errors import WeightsError
from radgen.train import checkpoint as ckpt
from radgen.train.run_log import read_metrics
from radgen.train.trainer import Trainer
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe


class _Payload:
    """Unpickling this creates a file: the marker proves whether code from a checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _train(run_dir: Path, collate, resume: bool = False) -> None:
    Trainer(fake_recipe(), run_dir, resume=resume, model_factory=TinyReportGenerator, train_dataset=FakeStudies(16),
            val_dataset=FakeStudies(4, prefix="v"), collate=collate, progress=False).train()


def _curve(run_dir: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss"), r.get("lr")) for r in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.train.run_fake import collate

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("ckpt") / "run"
    _train(run_dir, collate)
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_pickle_payload_in_optimizer_is_refused_not_run(run_copy, tmp_path):
    marker = tmp_path / "code-ran"
    latest = ckpt.list_checkpoints(run_copy)[-1]
    torch.save({"state": {}, "param_groups": [], "x": _Payload(marker)}, latest / "optimizer.pt")
    with pytest.raises(WeightsError, match="refused: loading it could run code") as err:
        ckpt.load_torch(latest / "optimizer.pt")
    assert not marker.exists()
    assert "\n" not in str(err.value) and "optimizer.pt" in str(err.value)


def test_files_written_by_save_load_with_weights_only(trained_run):
    for path in ckpt.list_checkpoints(trained_run):
        for name in ckpt.TORCH_FILES:
            torch.load(path / name, map_location="cpu", weights_only=True)  # no allowlist needed for new files


def test_rng_round_trip_and_old_ndarray_format(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save([ckpt.capture_rng()], tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(ckpt.load_torch(tmp_path / "rng.pt")[0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    # rng.pt files from before this change hold numpy's key as an ndarray; they still load.
    np.random.seed(5)
    torch.save([{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}], tmp_path / "old.pt")
    expected_numpy = np.random.rand()
    ckpt.restore_rng(ckpt.load_torch(tmp_path / "old.pt")[0])
    assert np.random.rand() == expected_numpy


def _truncate_weights(path: Path) -> None:
    data = (path / "trainable.safetensors").read_bytes()
    (path / "trainable.safetensors").write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "truncated safetensors": (_truncate_weights, "trainable.safetensors: unreadable safetensors file"),
    "bad optimizer.pt": (lambda p: (p / "optimizer.pt").write_bytes(b"not a torch file"), "optimizer.pt: unreadable"),
    "missing scheduler.pt": (lambda p: (p / "scheduler.pt").unlink(), "scheduler.pt: missing"),
    "list in trainer_state.json": (lambda p: (p / ckpt.STATE_FILE).write_text("[1, 2]"), "expected a JSON object, got list"),
    "wrong type in trainer_state.json": (
        lambda p: (p / ckpt.STATE_FILE).write_text(json.dumps({**json.loads((p / ckpt.STATE_FILE).read_text()), "global_step": "8"})),
        "field 'global_step' has str value",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_latest_falls_back_with_one_line_warning(run_copy, corruption, caplog):
    damage, message = CORRUPTIONS[corruption]
    *_, previous, latest = ckpt.list_checkpoints(run_copy)
    damage(latest)
    with pytest.raises(WeightsError) as err:
        ckpt.check_checkpoint(latest)
    assert message in str(err.value) and "\n" not in str(err.value)
    caplog.set_level(logging.WARNING)
    assert ckpt.resumable_checkpoint(run_copy) == previous
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(message in w and latest.name in w for w in warnings)
    assert any(f"falling back to {previous}" in w for w in warnings)


def test_no_readable_checkpoint_is_an_error(run_copy):
    for path in ckpt.list_checkpoints(run_copy):
        (path / "rng.pt").write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError, match="no checkpoint reads back"):
        ckpt.resumable_checkpoint(run_copy)


def test_resume_past_a_corrupt_latest_matches_the_uninterrupted_run(run_copy, fake_collate):
    reference = _curve(run_copy)
    latest = ckpt.list_checkpoints(run_copy)[-1]
    _truncate_weights(latest)
    # What a kill mid-save leaves: atomic_dir's temporary folder and a half-replaced ".old" copy.
    orphan = run_copy / "checkpoints" / ".step-8.abc123.tmp"
    orphan.mkdir()
    (orphan / "optimizer.pt").write_bytes(b"partial")
    (run_copy / "checkpoints" / ".step-6.old").mkdir()
    _train(run_copy, fake_collate, resume=True)
    assert _curve(run_copy) == reference  # steps after the fallback checkpoint were retrained identically
    ckpt.check_checkpoint(latest)  # rewritten by the resumed run
    assert not orphan.exists() and not (run_copy / "checkpoints" / ".step-6.old").exists()


def test_resume_without_checkpoint_says_so(tmp_path, fake_collate, caplog):
    caplog.set_level(logging.WARNING)
    Trainer(fake_recipe(), tmp_path / "new", resume=True, model_factory=TinyReportGenerator, train_dataset=FakeStudies(8),
            val_dataset=[], collate=fake_collate, progress=False, max_steps=1).train()
    assert any("has no checkpoint yet; starting the run from step 0" in r.getMessage() for r in caplog.records)


def test_load_model_state_rejects_truncated_safetensors(run_copy):
    latest = ckpt.list_checkpoints(run_copy)[-1]
    _truncate_weights(latest)
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        ckpt.load_model_state(TinyReportGenerator(fake_recipe()), latest)
