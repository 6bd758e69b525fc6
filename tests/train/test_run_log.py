"""metrics.jsonl repair on resume and non-finite values."""

import json

from radgen.train.run_log import MetricsLog, read_metrics


def test_resume_keeps_rows_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    rows = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "train", "st')
    log = MetricsLog(tmp_path, resume_step=3, tensorboard=False)
    log.log({"kind": "train", "step": 4, "loss": float("nan")})
    log.close()
    assert read_metrics(tmp_path) == rows[:3] + [{"kind": "train", "step": 4, "loss": "nan"}]


def test_fresh_run_starts_empty_and_writes_tensorboard(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 9}) + "\n")
    log = MetricsLog(tmp_path)
    log.log({"kind": "eval", "step": 1, "val_loss": 2.5, "best": True, "stage": "s"})
    log.close()
    assert read_metrics(tmp_path) == [{"kind": "eval", "step": 1, "val_loss": 2.5, "best": True, "stage": "s"}]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["scalars"] == ["eval/val_loss"]
    assert events.Scalars("eval/val_loss")[0].value == 2.5
