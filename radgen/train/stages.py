"""Stages: what trains, for how long, at which learning rate — and the schedule within a stage.

A recipe's `stages` list turns two-stage papers (LLaVA-style adapter-then-LoRA, seed 002; frozen
then unfrozen encoder, seed 003) into one run. Entering a stage:

1. `model.set_trainable(stage.train)` freezes everything, then unfreezes the named components /
   parameter-name globs;
2. components with no trainable parameter are put in eval mode, so a frozen CNN's BatchNorm
   statistics and a frozen tower's dropout do not drift (and so cached features equal live ones);
3. a fresh optimizer over the trainable parameters only and a fresh warmup + decay schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from radgen.config import RecipeConfig, StageConfig, TrainConfig
from radgen.errors import ConfigError

COMPONENTS = ("encoder", "connector", "decoder")


@dataclass
class StagePlan:
    index: int
    name: str
    train: list[str]
    steps: int  # optimizer steps in this stage
    lr: float
    warmup_steps: int


def plan_stages(recipe: RecipeConfig, steps_per_epoch: int, total_max_steps: int | None = None) -> list[StagePlan]:
    """Resolve each stage's length in optimizer steps and its peak learning rate.

    `total_max_steps` (sweeps, smoke runs) caps the whole run: stages are cut, in order, so
    the run stops after that many optimizer steps.
    """
    if not recipe.stages:
        raise ConfigError("recipe has no stages; add e.g. `stages: [{name: train, train: [connector], epochs: 1}]`")
    plans: list[StagePlan] = []
    remaining = total_max_steps
    for index, stage in enumerate(recipe.stages):
        steps = _stage_steps(stage, steps_per_epoch, index)
        if remaining is not None:
            if remaining <= 0:
                break
            steps = min(steps, remaining)
            remaining -= steps
        warmup = recipe.train.warmup_steps or int(round(recipe.train.warmup_ratio * steps))
        lr = stage.lr if stage.lr is not None else recipe.train.optim.lr
        plans.append(StagePlan(index, stage.name, list(stage.train), steps, lr, min(warmup, steps)))
    return plans


def _stage_steps(stage: StageConfig, steps_per_epoch: int, index: int) -> int:
    if stage.max_steps is not None:
        if stage.max_steps < 1:
            raise ConfigError(f"stages.{index}.max_steps must be >= 1, got {stage.max_steps}")
        return stage.max_steps
    if stage.epochs <= 0:
        raise ConfigError(f"stages.{index}.epochs must be > 0 (or set stages.{index}.max_steps), got {stage.epochs}")
    return max(1, math.ceil(stage.epochs * steps_per_epoch))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak LR after `step` applied updates: linear warmup then cosine/linear decay to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)  # never exactly 0: the first update still moves the weights
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ConfigError(f"train.schedule: unknown schedule '{schedule}'; use cosine, linear or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, plan: StagePlan, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, plan.steps, plan.warmup_steps, train.schedule)  # validate the name now, not mid-run
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, plan.steps, plan.warmup_steps, train.schedule))


def build_optimizer(model: torch.nn.Module, plan: StagePlan, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD over trainable parameters; no weight decay on biases and norms (as in nanoGPT/HF)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    if not decay and not no_decay:
        raise ConfigError(f"stage '{plan.name}': patterns {plan.train} match no parameter; use encoder/connector/decoder or a glob like 'decoder.*lora_*'")
    groups = [{"params": decay, "weight_decay": train.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    opt = train.optim
    if opt.name == "adamw":
        return torch.optim.AdamW(groups, lr=plan.lr, betas=tuple(opt.betas), eps=opt.eps)
    if opt.name == "adam":
        return torch.optim.Adam(groups, lr=plan.lr, betas=tuple(opt.betas), eps=opt.eps)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=plan.lr, momentum=opt.betas[0])
    raise ConfigError(f"train.optim.name: unknown optimizer '{opt.name}'; use adamw, adam or sgd")


def apply_stage(model: torch.nn.Module, plan: StagePlan) -> int:
    """Set what trains in this stage; return the number of trainable parameters."""
    count = model.set_trainable(plan.train)
    set_train_mode(model)
    return int(count)


def frozen_components(model: torch.nn.Module) -> list[str]:
    return [name for name in COMPONENTS if hasattr(model, name) and not any(p.requires_grad for p in getattr(model, name).parameters())]


def set_train_mode(model: torch.nn.Module) -> None:
    """model.train(), but frozen components stay in eval mode (BatchNorm stats, dropout)."""
    model.train()
    for name in frozen_components(model):
        getattr(model, name).eval()


def encoder_frozen(model: torch.nn.Module) -> bool:
    return "encoder" in frozen_components(model)
