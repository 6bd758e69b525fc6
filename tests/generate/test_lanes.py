"""Decoding lanes (radgen.generate.lanes): order, thread shares, leftovers, errors, and the same reports as one lane."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from radgen.data.study import read_manifest
from radgen.errors import ConfigError
from radgen.generate import lanes as lanes_module
from radgen.generate.decode import generate_reports, load_model
from radgen.generate.lanes import pick_lanes, run_in_lanes

needs_openmp = pytest.mark.skipif(not lanes_module.per_thread_counts(), reason="torch's thread counts are per thread only under OpenMP")


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_results_keep_the_items_order_whichever_lane_finishes_first():
    def work(item):
        time.sleep(0.05 if item % 2 == 0 else 0.0)  # even items finish after the odd ones started beside them
        return item * 10

    finished = []
    out = list(run_in_lanes(lambda i: finished.append(i) or work(i), range(7), lanes=2, threads=2))
    assert out == [i * 10 for i in range(7)]
    assert sorted(finished) == list(range(7))


@needs_openmp
def test_each_lane_runs_torch_on_its_share_and_the_caller_keeps_its_count(two_threads):
    seen = list(run_in_lanes(lambda _: (threading.current_thread().name, torch.get_num_threads()), range(4), lanes=2))
    assert all(name.startswith("radgen-lane") and threads == 1 for name, threads in seen)
    assert torch.get_num_threads() == 2
    later = []  # a thread started afterwards gets the caller's count, not a lane's
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [2]


@needs_openmp
def test_a_leftover_item_runs_alone_on_every_thread(two_threads):
    seen = list(run_in_lanes(lambda _: (threading.current_thread() is threading.main_thread(), torch.get_num_threads()),
                             range(5), lanes=2, count=5))
    assert seen[:4] == [(False, 1)] * 4
    assert seen[4] == (True, 2)


def test_items_are_drawn_at_most_lanes_ahead():
    drawn = []

    def items():
        for i in range(6):
            drawn.append(i)
            yield i

    results = run_in_lanes(lambda i: i, items(), lanes=2, threads=2)
    assert next(results) == 0
    assert len(drawn) == 2  # the first result came back before a third batch was read
    assert list(results) == [1, 2, 3, 4, 5]


def test_an_error_in_a_lane_is_raised_to_the_caller():
    def work(item):
        if item == 1:
            raise ValueError("batch 1 failed")
        return item

    with pytest.raises(ValueError, match="batch 1 failed"):
        list(run_in_lanes(work, range(4), lanes=2, threads=2))


def test_one_lane_runs_in_the_calling_thread():
    assert list(run_in_lanes(lambda _: threading.current_thread() is threading.main_thread(), range(3), lanes=1)) == [True] * 3


def test_pick_lanes(monkeypatch):
    monkeypatch.delenv(lanes_module.ENV, raising=False)
    monkeypatch.setattr(lanes_module, "per_thread_counts", lambda: True)
    for precision in ("bfloat16", "float16"):
        assert pick_lanes("cpu", threads=2, batches=10, precision=precision) == 2
    for precision in ("float32", "int8", None):  # measured not to pay (fp32), or not measured
        assert pick_lanes("cpu", threads=2, batches=10, precision=precision) == 1
    assert pick_lanes("cpu", threads=1, batches=10, precision="bfloat16") == 1  # one thread: nothing to share
    assert pick_lanes("cpu", threads=2, batches=1, precision="bfloat16") == 1  # one batch: nothing to run beside it
    assert pick_lanes("cuda", threads=2, batches=10, precision="bfloat16") == 1
    assert pick_lanes("cpu", threads=4, batches=10, requested=3) == 3
    assert pick_lanes("cpu", threads=2, batches=10, requested=3) == 2  # never more lanes than threads
    monkeypatch.setenv(lanes_module.ENV, "2")
    assert pick_lanes("cpu", threads=2, batches=10, precision="float32") == 2
    monkeypatch.setenv(lanes_module.ENV, "1")
    assert pick_lanes("cpu", threads=2, batches=10, precision="bfloat16") == 1
    assert pick_lanes("cpu", threads=2, batches=10, requested=2) == 2  # the argument wins
    monkeypatch.setenv(lanes_module.ENV, "two")
    with pytest.raises(ConfigError, match="RADGEN_DECODE_LANES='two' is not a whole number"):
        pick_lanes("cpu", threads=2, batches=10)
    with pytest.raises(ConfigError, match="at least 1"):
        pick_lanes("cpu", threads=2, batches=10, requested=0)
    monkeypatch.setattr(lanes_module, "per_thread_counts", lambda: False)  # a process-wide count: lanes would take turns
    assert pick_lanes("cpu", threads=2, batches=10, requested=2) == 1


@needs_openmp
def test_lanes_write_the_reports_one_lane_writes(saved_small, phantom):
    """Two lanes of one thread each against one lane on one thread (the same kernels, so the same
    numbers): the same rows in the same order, though each lane's batch drafts without the reports
    of the batch beside it."""
    manifest, root = phantom
    studies = read_manifest(manifest)[:4]
    model = load_model(saved_small[0], dtype="float32")
    settings = dict(root=root, num_beams=1, max_new_tokens=12, batch_size=2, progress=False)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model.report_draft.clear()
        one = generate_reports(model, studies, lanes=1, **settings)
        model.report_draft.clear()
        torch.set_num_threads(2)
        two = generate_reports(model, studies, lanes=2, **settings)
    finally:
        torch.set_num_threads(previous)
    assert [r["study_id"] for r in two] == [s.study_id for s in studies]
    for a, b in zip(one, two):
        assert a["tokens"] == b["tokens"] and a["findings"] == b["findings"]
        assert a["token_logprobs"] == pytest.approx(b["token_logprobs"], abs=1e-4)


@needs_openmp
def test_cli_lanes(saved_small, phantom, tmp_path, capsys):
    from radgen.cli import main

    folder, _ = saved_small
    manifest, _ = phantom
    argv = ["--threads", "2", "generate", "--model", str(folder), "--data", str(manifest), "--max-new-tokens", "5", "--batch-size", "1",
            "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "two.jsonl"), "--lanes", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["study_id"] for r in rows] == ["s1", "s2", "s3", "s4", "s5"]  # five batches, in order, over two lanes
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "none.jsonl"), "--lanes", "0"]) == 2
    assert "decoding lanes must be at least 1" in capsys.readouterr().err
