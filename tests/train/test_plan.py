"""Batch plan (data order, sharding, resume position) and learning-rate schedules."""

import math

import pytest

from radgen.config import RecipeConfig, from_dict
from radgen.errors import ConfigError
from radgen.train.data import BatchPlan, eval_batches
from radgen.train.stages import lr_factor, plan_stages


def test_epoch_visits_every_example_and_pads_by_wrapping():
    plan = BatchPlan(num_examples=10, batch_size=4, seed=3)
    assert plan.steps_per_epoch == 3
    order = plan.epoch_order(0)
    assert len(order) == 12 and sorted(order[:10]) == list(range(10)) and order[10:] == order[:2]
    assert plan.epoch_order(1) != order and plan.epoch_order(0) == order
    assert BatchPlan(3, 4).epoch_order(0).__len__() == 4  # smaller than one batch


def test_ranks_and_accumulation_see_the_same_micro_batches():
    single = BatchPlan(16, batch_size=2, grad_accum=2, world_size=1, rank=0, seed=1)
    ranks = [BatchPlan(16, batch_size=2, grad_accum=1, world_size=2, rank=r, seed=1) for r in range(2)]
    for step in range(single.steps_per_epoch):
        assert single.micro_batches(0, step) == [ranks[0].micro_batches(0, step)[0], ranks[1].micro_batches(0, step)[0]]
    seen = [i for step in range(4) for r in ranks for mb in r.micro_batches(0, step) for i in mb]
    assert sorted(seen) == list(range(16))


def test_resume_position_replays_the_same_batches():
    plan = BatchPlan(10, batch_size=3, seed=0)
    stream = plan.steps(0, 0)
    full = [next(stream) for _ in range(9)]
    resumed = plan.steps(1, 2)  # 4 steps per epoch: step 6 is epoch 1, step 2
    assert [next(resumed) for _ in range(3)] == full[6:9]


def test_length_buckets_group_similar_lengths_and_keep_every_property_of_the_plan():
    lengths = tuple((i * 37) % 50 + 1 for i in range(40))  # report lengths 1..50 in scrambled order
    plain = BatchPlan(40, batch_size=4, seed=2)
    bucketed = BatchPlan(40, batch_size=4, seed=2, lengths=lengths, bucket_window=5)
    for epoch in range(2):
        assert sorted(bucketed.epoch_order(epoch)) == sorted(plain.epoch_order(epoch))  # same examples, once each

    def padding(plan):
        batches = [mb for step in range(plan.steps_per_epoch) for mb in plan.micro_batches(0, step)]
        return sum(max(lengths[i] for i in mb) - lengths[i] for mb in batches for i in mb)

    assert padding(bucketed) < padding(plain) / 3
    assert bucketed.epoch_order(0) == BatchPlan(40, batch_size=4, seed=2, lengths=lengths, bucket_window=5).epoch_order(0)
    assert bucketed.epoch_order(1) != bucketed.epoch_order(0)
    # batches are shuffled after bucketing: not one long sorted run of lengths
    firsts = [lengths[mb[0]] for step in range(bucketed.steps_per_epoch) for mb in bucketed.micro_batches(0, step)]
    assert firsts != sorted(firsts)
    # DDP and accumulation still cut the same global batches
    single = BatchPlan(40, batch_size=2, grad_accum=2, seed=1, lengths=lengths, bucket_window=3)
    ranks = [BatchPlan(40, batch_size=2, world_size=2, rank=r, seed=1, lengths=lengths, bucket_window=3) for r in range(2)]
    for step in range(single.steps_per_epoch):
        assert single.micro_batches(1, step) == [ranks[0].micro_batches(1, step)[0], ranks[1].micro_batches(1, step)[0]]


def test_eval_batches_split_across_ranks_without_padding():
    assert eval_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert eval_batches(5, 2, world_size=2, rank=1) == [[2, 3]]
    assert eval_batches(5, 2, max_batches=1) == [[0, 1]]


@pytest.mark.parametrize("schedule,step,expected", [
    ("cosine", 0, 1 / 3), ("cosine", 1, 2 / 3), ("cosine", 2, 1.0), ("cosine", 6, 0.5), ("cosine", 10, 0.0),
    ("linear", 6, 0.5), ("linear", 8, 0.25), ("constant", 9, 1.0),
])
def test_warmup_then_decay(schedule, step, expected):
    # warmup 2 of 10 steps: 1/3, 2/3, then decay over the remaining 8 (step 6 is half way)
    assert lr_factor(step, total=10, warmup=2, schedule=schedule) == pytest.approx(expected)


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="train.schedule: unknown schedule 'cos'"):
        lr_factor(5, 10, 0, "cos")


def test_stage_lengths_and_lr():
    recipe = from_dict(RecipeConfig, {"train": {"optim": {"lr": 1e-4}, "warmup_ratio": 0.1}, "stages": [
        {"name": "adapter", "train": ["connector"], "epochs": 1},
        {"name": "lora", "train": ["decoder.*lora_*"], "epochs": 2.5, "lr": 2e-5},
        {"name": "extra", "train": ["connector"], "max_steps": 7},
    ]})
    plans = plan_stages(recipe, steps_per_epoch=10)
    assert [(p.name, p.steps, p.lr, p.warmup_steps) for p in plans] == [("adapter", 10, 1e-4, 1), ("lora", 25, 2e-5, 2), ("extra", 7, 1e-4, 1)]
    capped = plan_stages(recipe, steps_per_epoch=10, total_max_steps=12)
    assert [(p.name, p.steps) for p in capped] == [("adapter", 10), ("lora", 2)]
    with pytest.raises(ConfigError, match="stages.0.epochs must be > 0"):
        plan_stages(from_dict(RecipeConfig, {"stages": [{"epochs": 0}]}), 10)
