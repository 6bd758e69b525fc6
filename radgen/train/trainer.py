"""The training loop: stages, mixed precision, accumulation, checkpoints, eval, feature cache.

Built on HF accelerate: `Accelerator(mixed_precision, gradient_accumulation_steps)` provides
device placement, autocast, the fp16 GradScaler, DDP/FSDP wrapping under `accelerate launch` /
`torchrun`, and `accumulate()`/`backward()`. What accelerate leaves to us, and lives here:

* batches come from `BatchPlan` (radgen.train.data), not a prepared DataLoader, so the data
  position is two integers and resume is exact;
* a step whose loss or gradient norm is not finite is skipped (fp16 overflow, the classic LoRA
  NaN): with a GradScaler it skips the step and lowers the scale, without one we zero the
  gradients ourselves; the schedule does not advance; every skip is counted and logged;
* stages (radgen.train.stages) re-wrap the model after `set_trainable`, because DDP records the
  trainable parameters when it wraps.
"""

from __future__ import annotations

import logging
import inspect
import math
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace as dataclass_replace
from pathlib import Path
from typing import Any

import torch
import yaml

from radgen.config import RecipeConfig, recipe_to_yaml
from radgen.data.dataset import lateral_inputs
from radgen.errors import ConfigError, DataError
from radgen.io import atomic_write_json, atomic_write_text
from radgen.threads import rebalance_threads
from radgen.train import checkpoint as ckpt
from radgen.train.data import BatchPlan, collate_features, collate_pixels, load_splits, report_lengths
from radgen.models.findings import names_from_targets, targets_from_labels
from radgen.train.evaluation import calibrate_finding_head, generation_scores, study_finding_labels, validation_loss
from radgen.train.feature_cache import CachedFeatures, FeatureCache, encoder_identity, fill_cache
from radgen.train.run_log import MetricsLog
from radgen.train.stages import StagePlan, apply_stage, build_optimizer, build_scheduler, encoder_frozen, plan_stages, set_train_mode

log = logging.getLogger(__name__)

KILL_ENV = "RADGEN_TEST_KILL_AT_STEP"  # tests: SIGKILL this process right after that optimizer step
_PRECISION = {"fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class TrainResult:
    run_dir: str
    global_step: int
    skipped_steps: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    last_eval: dict[str, Any]
    seconds: float


def make_accelerator(recipe: RecipeConfig) -> Any:
    """Accelerator for this recipe (FSDP plugin when train.distributed=fsdp under a multi-process launch)."""
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin

    train = recipe.train
    if train.precision not in _PRECISION:
        raise ConfigError(f"train.precision: '{train.precision}' is not one of fp32, bf16, fp16")
    if train.distributed not in ("ddp", "fsdp"):
        raise ConfigError(f"train.distributed: '{train.distributed}' is not ddp or fsdp")
    if train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision=fp16 needs a GPU (dynamic loss scaling is CUDA-only here); on CPU use train.precision=bf16 or fp32")
    kwargs: dict[str, Any] = {}
    if train.distributed == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # use_orig_params: frozen and trainable parameters may share an FSDP unit (LoRA, adapters)
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
    # cpu=True without CUDA: otherwise accelerate ignores a torchrun launch on CPU (no gloo process group)
    return Accelerator(mixed_precision=_PRECISION[train.precision], gradient_accumulation_steps=train.grad_accum, cpu=not torch.cuda.is_available(), **kwargs)


class Trainer:
    """Train a ReportGenerator from a recipe; see docs/training.md.

    `model_factory(recipe)` defaults to `radgen.models.build_model`; datasets default to the
    recipe's manifest (`data.manifest`, splits train / val). Tests and notebooks can pass their own.
    """

    _wrapped: Any = None  # the model as prepared by accelerate (DDP/FSDP wrapper or the model itself)

    def __init__(
        self,
        recipe: RecipeConfig,
        output_dir: str | Path | None = None,
        resume: bool = False,
        model_factory: Callable[[RecipeConfig], torch.nn.Module] | None = None,
        train_dataset: Sequence[dict] | None = None,
        val_dataset: Sequence[dict] | None = None,
        max_steps: int | None = None,
        progress: bool = True,
        accelerator: Any = None,
        collate: Callable[[list[dict]], dict] | None = None,
    ):
        self.recipe = recipe
        self.run_dir = Path(output_dir or recipe.train.output_dir)
        self.resume = resume
        self.model_factory = model_factory
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.max_steps = max_steps
        self.progress = progress
        self.accelerator = accelerator
        self.collate = collate or collate_pixels  # custom datasets may bring their own batching

    # ------------------------------------------------------------------ setup

    def _prepare_run_dir(self) -> Path | None:
        """Check the run folder against --resume; return the checkpoint to resume from."""
        text = recipe_to_yaml(self.recipe)
        saved = self.run_dir / "recipe.yaml"
        existing = ckpt.latest_checkpoint(self.run_dir)
        if self.resume:
            if saved.is_file() and _comparable(saved.read_text()) != _comparable(text):
                raise ConfigError(f"{saved}: the run was started with a different recipe; resume with the same config and overrides, or use a new --output-dir")
            if self.accelerator.is_main_process:
                ckpt.remove_orphans(self.run_dir)
            existing = ckpt.resumable_checkpoint(self.run_dir)  # falls back past a corrupt newest one, saying so
            if existing is None:
                log.warning("--resume: %s has no checkpoint yet; starting the run from step 0", self.run_dir / "checkpoints")
        elif existing is not None:
            raise ConfigError(f"{self.run_dir}: already holds checkpoints; pass --resume to continue it or choose a new --output-dir")
        if self.accelerator.is_main_process:
            atomic_write_text(saved, text)
        return existing if self.resume else None

    def _build_model(self) -> torch.nn.Module:
        factory = self.model_factory
        if factory is None:
            from radgen.models import build_model

            factory = build_model
        return factory(self.recipe)

    # ------------------------------------------------------------------ main loop

    def train(self) -> TrainResult:
        from accelerate.utils import set_seed

        started = time.perf_counter()
        recipe, train_cfg = self.recipe, self.recipe.train
        if self.accelerator is None:
            self.accelerator = make_accelerator(recipe)
        acc = self.accelerator
        resume_from = self._prepare_run_dir()
        if resume_from is not None and acc.num_processes > 1 and train_cfg.distributed == "fsdp":
            # optimizer states are sharded per process under FSDP and our checkpoints keep one copy
            raise ConfigError("--resume under train.distributed=fsdp is not supported yet; resume with train.distributed=ddp or start a new run")
        # Seed before building: frozen weights are rebuilt (not saved) on resume, so init must repeat.
        set_seed(train_cfg.seed)
        raw_model = self._build_model().to(acc.device)
        if train_cfg.init_from:
            # also on resume: a checkpoint holds only what its stage trains, the rest comes from here.
            # Before the feature cache is keyed, so initial encoder weights change the encoder id.
            loaded = ckpt.load_model_state(raw_model, Path(train_cfg.init_from), hint="init_from needs weights of the same recipe and size")
            log.info("initialised %d tensors from %s", loaded, train_cfg.init_from)
        if self.train_dataset is None:
            self.train_dataset, self.val_dataset = load_splits(recipe, raw_model.image_transform)
        train_set = self.train_dataset
        if len(train_set) == 0:
            raise DataError(f"{recipe.data.manifest}: no training studies (split 'train'); check the manifest's split field")

        if train_cfg.length_buckets < 0:
            raise ConfigError(f"train.length_buckets must be >= 0 (0 = off), got {train_cfg.length_buckets}")
        lengths = report_lengths(raw_model, train_set, recipe.data.max_tokens) if train_cfg.length_buckets > 0 else None
        plan = BatchPlan(len(train_set), train_cfg.batch_size, train_cfg.grad_accum, acc.num_processes, acc.process_index, train_cfg.seed,
                         lengths=lengths, bucket_window=train_cfg.length_buckets)
        stages = plan_stages(recipe, plan.steps_per_epoch, self.max_steps)
        total_steps = sum(s.steps for s in stages)

        state = ckpt.TrainerState()
        if resume_from is not None:
            state = ckpt.load_state(resume_from)
            log.info("resuming %s from %s (step %d)", self.run_dir, resume_from, state.global_step)
        self.metrics = MetricsLog(self.run_dir, enabled=acc.is_main_process, resume_step=state.global_step if resume_from else None)
        self.last_eval: dict[str, Any] = {}
        progress = _progress_bar(total_steps, state.global_step, self.progress and acc.is_main_process)
        try:
            for stage in stages[state.stage_index :]:
                if state.stopped_early:
                    break
                self._run_stage(stage, raw_model, plan, state, resume_from, progress, len(stages))
                resume_from = None  # only the first stage entered resumes optimizer/RNG state
        finally:
            progress.close()
            self.metrics.close()

        if not (self.run_dir / "best").exists():
            # no validation split: the last weights are the best we know
            self._save_best(raw_model)
        acc.wait_for_everyone()
        result = TrainResult(str(self.run_dir), state.global_step, state.skipped_steps, state.best_metric, state.best_step, state.stopped_early, self.last_eval, time.perf_counter() - started)
        if acc.is_main_process:
            atomic_write_json(self.run_dir / "train_summary.json", asdict(result))
        return result

    def _run_stage(self, stage: StagePlan, raw_model: torch.nn.Module, plan: BatchPlan, state: ckpt.TrainerState, resume_from: Path | None, progress: Any, num_stages: int) -> None:
        acc, train_cfg = self.accelerator, self.recipe.train
        acc.free_memory()  # drop the previous stage's DDP wrapper and optimizer
        trainable = apply_stage(raw_model, stage)
        state.trained_names = sorted(set(state.trained_names) | {n for n, p in raw_model.named_parameters() if p.requires_grad})
        log.info("stage %d/%d '%s': %d steps, lr %.3g, %s trainable parameters", stage.index + 1, num_stages, stage.name, stage.steps, stage.lr, f"{trainable:,}")

        train_set, val_set, collate = self._stage_data(raw_model)
        self._prepare_finding_head(raw_model, train_set, val_set)
        if resume_from is not None:
            ckpt.load_model_state(raw_model, resume_from)  # before wrapping: DDP/FSDP copy the weights
        optimizer = build_optimizer(raw_model, stage, train_cfg)
        scheduler = build_scheduler(optimizer, stage, train_cfg)
        model, optimizer = acc.prepare(raw_model, optimizer)
        self._wrapped = model
        set_train_mode(acc.unwrap_model(model))
        stage_plan = dataclass_replace(plan, stage_index=stage.index)

        if resume_from is not None:
            if state.stage_step > 0:  # a checkpoint at a stage boundary carries the old stage's optimizer
                optimizer.optimizer.load_state_dict(ckpt.load_torch(resume_from / "optimizer.pt"))
                scheduler.load_state_dict(ckpt.load_torch(resume_from / "scheduler.pt"))
            if acc.scaler is not None and (resume_from / "scaler.pt").is_file():
                acc.scaler.load_state_dict(ckpt.load_torch(resume_from / "scaler.pt"))
        else:
            state.epoch, state.step_in_epoch = 0, 0

        to_inputs = self._input_builder(raw_model)
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_sampler=_MicroBatches(stage_plan, state.epoch, state.step_in_epoch, stage.steps - state.stage_step),
            collate_fn=collate,
            num_workers=train_cfg.num_workers,
            # its own generator: iter(DataLoader) otherwise draws a seed from the global RNG, which
            # would shift dropout masks between a fresh and a resumed run
            generator=torch.Generator().manual_seed(train_cfg.seed),
        )
        batches = iter(loader)
        if resume_from is not None:  # last, so nothing above consumes the restored random streams
            rng_states = ckpt.load_torch(resume_from / "rng.pt")
            ckpt.restore_rng(rng_states[min(acc.process_index, len(rng_states) - 1)])
        window_start = time.perf_counter()
        window_samples = 0
        while state.stage_step < stage.steps:
            mean_loss, grad_norm, lr_used = self._optimizer_step(model, raw_model, batches, optimizer, scheduler, to_inputs, state)
            rebalance_threads()
            state.global_step += 1
            state.stage_step += 1
            state.step_in_epoch += 1
            if state.step_in_epoch >= stage_plan.steps_per_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            state.samples_seen += stage_plan.global_batch
            window_samples += stage_plan.global_batch
            if math.isfinite(mean_loss):
                state.window_loss += mean_loss
                state.window_steps += 1
            progress.update(1)

            last_of_stage = state.stage_step >= stage.steps
            if state.global_step % train_cfg.log_every == 0 or last_of_stage:
                elapsed = time.perf_counter() - window_start
                row = {
                    "kind": "train",
                    "step": state.global_step,
                    "stage": stage.name,
                    "epoch": round(state.epoch + state.step_in_epoch / stage_plan.steps_per_epoch, 4),
                    "loss": state.window_loss / state.window_steps if state.window_steps else math.nan,
                    "lr": lr_used,
                    "grad_norm": grad_norm,
                    "samples_per_s": window_samples / elapsed if elapsed > 0 else math.nan,
                    "skipped_steps": state.skipped_steps,
                }
                self.metrics.log(row)
                progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", sps=f"{row['samples_per_s']:.1f}")
                state.window_loss, state.window_steps = 0.0, 0
                window_start, window_samples = time.perf_counter(), 0

            paused = time.perf_counter()
            if val_set and (state.global_step % train_cfg.eval_every == 0 or last_of_stage):
                self._evaluate(raw_model, model, val_set, collate, to_inputs, state, stage)
            if last_of_stage:
                state.stage_index += 1
                state.stage_step = 0
                state.epoch, state.step_in_epoch = 0, 0
            if state.global_step % train_cfg.save_every == 0 or last_of_stage or state.stopped_early:
                self._save(raw_model, optimizer, scheduler, state)
            window_start += time.perf_counter() - paused  # evaluating and saving are not training throughput
            if os.environ.get(KILL_ENV) == str(state.global_step):
                os.kill(os.getpid(), signal.SIGKILL)
            if state.stopped_early or last_of_stage:
                break

    # ------------------------------------------------------------------ pieces

    def _optimizer_step(self, model, raw_model, batches, optimizer, scheduler, to_inputs, state: ckpt.TrainerState) -> tuple[float, float, float]:
        """grad_accum micro-batches, clip, step (or skip when non-finite). Returns (loss, grad norm, lr used)."""
        acc, train_cfg = self.accelerator, self.recipe.train
        step_loss = torch.zeros((), device=acc.device)
        for _ in range(train_cfg.grad_accum):
            batch = next(batches)
            with acc.accumulate(model):  # no DDP all-reduce until the last micro-batch
                loss = model(**to_inputs(batch)).loss
                step_loss += loss.detach().float() / train_cfg.grad_accum
                acc.backward(loss)  # divides by grad_accum; scales the loss under fp16
        lr_used = optimizer.param_groups[0]["lr"]
        params = [p for p in raw_model.parameters() if p.requires_grad]
        # always computed (inf = no clipping): the norm is how a non-finite gradient is detected
        grad_norm = float(acc.clip_grad_norm_(params, train_cfg.max_grad_norm if train_cfg.max_grad_norm else float("inf")))
        mean_loss = float(acc.reduce(step_loss, reduction="mean")) if acc.num_processes > 1 else float(step_loss)
        finite = math.isfinite(mean_loss) and math.isfinite(grad_norm)  # identical on every rank (reduced loss, all-reduced grads)
        if acc.scaler is not None:
            optimizer.step()  # the GradScaler skips it on inf/NaN gradients and lowers the scale
            skipped = acc.optimizer_step_was_skipped or not finite
        elif finite:
            optimizer.step()
            skipped = False
        else:
            skipped = True
        optimizer.zero_grad(set_to_none=True)
        if skipped:
            state.skipped_steps += 1
            log.warning("step %d: non-finite loss/gradient (loss %s, grad norm %s); step skipped (%d so far)", state.global_step + 1, mean_loss, grad_norm, state.skipped_steps)
        else:
            scheduler.step()  # as HF Trainer: the schedule follows applied updates
        return mean_loss, grad_norm, lr_used

    def _stage_data(self, raw_model: torch.nn.Module) -> tuple[Sequence[dict], Sequence[dict], Callable]:
        """Datasets for this stage: cached encoder features when the encoder is frozen, else pixels."""
        recipe, acc = self.recipe, self.accelerator
        train_set, val_set = self.train_dataset, self.val_dataset or []
        if not (recipe.train.feature_cache and encoder_frozen(raw_model)):
            return train_set, val_set, self.collate
        if getattr(getattr(raw_model, "findings", None), "tail_blocks", 0):
            log.warning("model.findings.tune_encoder_blocks=%d: the finding head reads the encoder's trunk maps, which the feature "
                        "cache does not hold, so training reads pixels (slower). To keep the cache, train with 0 and fit the head's "
                        "blocks afterwards: radgen fit-findings MODEL --tune-encoder-blocks N", raw_model.findings.tail_blocks)
            return train_set, val_set, self.collate
        root = Path(recipe.train.feature_cache_dir or self.run_dir / "feature_cache")
        encoder_id = encoder_identity(raw_model)
        # One process writes the store; the others wait and then read it (memory-mapped, shared).
        records: dict[str, list[dict]] = {}
        with acc.main_process_first():
            cache = FeatureCache(root, encoder_id, recipe.train.feature_cache_dtype)
            for name, dataset in (("train", train_set), ("val", val_set)):
                records[name], encoded = fill_cache(raw_model, dataset, cache, recipe.train.batch_size, acc.device, acc.autocast, self.progress and acc.is_main_process)
                log.info("feature cache %s: %d %s images encoded, %d reused", cache.dir, encoded, name, len(dataset) - encoded)
        self.cache_stats = {"dir": str(cache.dir), "entries": len(cache)}
        return CachedFeatures(records["train"], cache), CachedFeatures(records["val"], cache), collate_features

    def _prepare_finding_head(self, raw_model: torch.nn.Module, train_set: Sequence[dict], val_set: Sequence[dict]) -> None:
        """Grounded recipes: class-balance the head's loss from the training labels, keep the val targets
        for threshold calibration, and say where the targets come from."""
        self.val_finding_targets = None
        head = getattr(raw_model, "findings", None)
        if head is None:
            return
        source = self.recipe.model.findings.label_source
        labels, reports = study_finding_labels(train_set)
        targets, from_report = targets_from_labels(labels, reports, head.observations, source)
        head.set_class_balance(targets, self.recipe.model.findings.max_pos_weight)
        log.info("finding head: training targets for %d studies from the manifest's labels.chexpert, %d from the report labeler "
                 "(model.findings.label_source=%s); positives per observation: %s", len(reports) - from_report, from_report, source,
                 ", ".join(f"{name} {int(n)}" for name, n in zip(head.observations, targets.sum(0).tolist())))
        if val_set:
            val_labels, val_reports = study_finding_labels(val_set)
            self.val_finding_targets = targets_from_labels(val_labels, val_reports, head.observations, source)[0]

    def _input_builder(self, raw_model: torch.nn.Module) -> Callable[[dict], dict[str, Any]]:
        device, max_tokens = self.accelerator.device, self.recipe.data.max_tokens
        loss_only = "loss_only" in inspect.signature(raw_model.forward).parameters  # ReportGenerator; test doubles may lack it
        head = getattr(raw_model, "findings", None)
        source = self.recipe.model.findings.label_source
        context_dropout = self.recipe.model.context.dropout
        lateral_dropout = self.recipe.model.findings.lateral_dropout
        # python's stream (seeded by set_seed, saved in every checkpoint's rng.pt, restored on
        # --resume; nothing else in training draws from it): which contexts and laterals are left out
        # never shifts the data order or the dropout masks, and a resumed run leaves out the same ones
        context_rng = random

        def to_inputs(batch: dict) -> dict[str, Any]:
            findings, targets = None, None
            if head is not None:
                targets, _ = targets_from_labels(batch.get("finding_labels") or [None] * len(batch["reports"]), batch["reports"], head.observations, source)
                if raw_model.grounded_prompt:  # teacher forcing: the prompt names the study's true findings
                    findings = names_from_targets(targets, head.observations)
            extra: dict[str, Any] = {"findings": findings} if findings is not None else {}
            if "contexts" in batch:  # training leaves some out (model.context.dropout); validation keeps all
                keep = [not raw_model.training or context_rng.random() >= context_dropout for _ in batch["contexts"]]
                extra["contexts"] = [text if kept else "" for text, kept in zip(batch["contexts"], keep)]
            tokens = raw_model.tokenize_reports(list(batch["reports"]), max_tokens=max_tokens, **extra)
            inputs = {k: tokens[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
            if targets is not None:
                inputs["finding_targets"] = targets.to(device)
            if loss_only:
                inputs["loss_only"] = True  # logits at label positions only (radgen.models.fast): same loss, less work
            if "image_features" in batch:
                inputs["image_features"] = batch["image_features"].to(device)
            else:
                inputs["pixel_values"] = batch["pixel_values"].to(device)
            if head is not None and head.lateral and targets is not None:
                lateral = lateral_inputs(batch, device)
                if raw_model.training and "lateral_mask" in lateral and lateral_dropout > 0:  # see FindingHead
                    hidden = torch.tensor([context_rng.random() < lateral_dropout for _ in batch["reports"]], device=device)
                    lateral["lateral_mask"] = lateral["lateral_mask"] & ~hidden
                inputs.update(lateral)
            return inputs

        return to_inputs

    def _evaluate(self, raw_model, model, val_set, collate, to_inputs, state: ckpt.TrainerState, stage: StagePlan) -> None:
        acc, train_cfg = self.accelerator, self.recipe.train
        started = time.perf_counter()
        row: dict[str, Any] = {"kind": "eval", "step": state.global_step, "stage": stage.name}
        row["val_loss"] = validation_loss(raw_model, val_set, collate, to_inputs, train_cfg.batch_size, train_cfg.eval_max_batches, acc)
        if getattr(self, "val_finding_targets", None) is not None:
            # thresholds follow the head: recalibrated on the whole val split at every evaluation, so
            # the weights saved as best carry the thresholds that fit them
            row.update(calibrate_finding_head(raw_model, val_set, collate, self.val_finding_targets, train_cfg.batch_size, acc.device))
        distributed_fsdp = acc.num_processes > 1 and train_cfg.distributed == "fsdp"  # FSDP generate needs every rank; val loss only
        if train_cfg.eval_generate > 0 and acc.is_main_process and not distributed_fsdp:
            gen = self.recipe.generate
            kwargs = {"num_beams": gen.num_beams, "max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty, "no_repeat_ngram_size": gen.no_repeat_ngram_size}
            scores = generation_scores(raw_model, val_set, collate, train_cfg.eval_generate, kwargs, acc.device, train_cfg.batch_size)
            sample = scores.pop("sample_report", None)
            row.update(scores)
            if sample is not None:
                log.info("step %d sample report: %s", state.global_step, sample[:200])
        set_train_mode(raw_model)
        metric_name = train_cfg.select_metric
        value = row.get(metric_name)
        if value is None:
            if metric_name != "val_loss" and acc.is_main_process:
                log.warning("train.select_metric=%s not computed (is train.eval_generate > 0 and radgen.metrics present?); using val_loss", metric_name)
            metric_name, value = "val_loss", row["val_loss"]
        value = _broadcast_float(acc, value)
        lower_better = metric_name.endswith("loss")
        improved = math.isfinite(value) and (state.best_metric is None or (value < state.best_metric if lower_better else value > state.best_metric))
        if improved:
            state.best_metric, state.best_step, state.bad_evals = value, state.global_step, 0
            self._save_best(raw_model)
        else:
            state.bad_evals += 1
            patience = train_cfg.early_stopping_patience
            if patience is not None and state.bad_evals >= patience:
                state.stopped_early = True
                log.info("early stopping at step %d: %s has not improved for %d evaluations (best %.4f at step %s)", state.global_step, metric_name, patience, state.best_metric, state.best_step)
        row["best"] = improved
        row["eval_seconds"] = time.perf_counter() - started
        self.last_eval = row
        self.metrics.log(row)
        acc.wait_for_everyone()

    def _save(self, raw_model, optimizer, scheduler, state: ckpt.TrainerState) -> None:
        acc = self.accelerator
        from accelerate.utils import gather_object

        rng = ckpt.capture_rng()
        rng_states = gather_object([rng]) if acc.num_processes > 1 else [rng]
        with self._full_params():
            model_state = ckpt.trainable_state(raw_model, state.trained_names) if acc.is_main_process else None
        if acc.is_main_process:
            ckpt.save_checkpoint(self.run_dir, state, model_state, optimizer.optimizer, scheduler, acc.scaler, rng_states, self.recipe.train.keep_checkpoints)
        acc.wait_for_everyone()


    def _save_best(self, raw_model: torch.nn.Module) -> None:
        """RUN/best: a ReportGenerator.save_pretrained folder (every process joins an FSDP gather first)."""
        with self._full_params():
            if self.accelerator.is_main_process:
                raw_model.save_pretrained(self.run_dir / "best")
        self.accelerator.wait_for_everyone()

    def _full_params(self) -> Any:
        """Under FSDP, materialise full (unsharded) parameters on the main process for saving; else a no-op.

        Not exercised by the test suite (no multi-GPU machine); DDP and single-process paths are.
        """
        import contextlib

        wrapped = self._wrapped
        try:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        except ImportError:  # torch built without distributed
            return contextlib.nullcontext()
        if not isinstance(wrapped, FSDP):
            return contextlib.nullcontext()
        return FSDP.summon_full_params(wrapped, writeback=False, rank0_only=True, offload_to_cpu=True)


class _MicroBatches(torch.utils.data.Sampler):
    """Micro-batches of one stage from a saved position: `steps` optimizer steps × grad_accum."""

    def __init__(self, plan: BatchPlan, epoch: int, step_in_epoch: int, steps: int):
        self.plan, self.epoch, self.step_in_epoch, self.steps = plan, epoch, step_in_epoch, steps

    def __iter__(self):
        for count, (_, _, micro_batches) in enumerate(self.plan.steps(self.epoch, self.step_in_epoch)):
            if count >= self.steps:
                return
            yield from micro_batches

    def __len__(self) -> int:
        return self.steps * self.plan.grad_accum


def _broadcast_float(acc: Any, value: float) -> float:
    """Every process must take the same best/early-stop decision: use the main process's value."""
    if acc.num_processes == 1:
        return float(value)
    from accelerate.utils import broadcast

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=acc.device)
    return float(broadcast(tensor, from_process=0)[0])


def _comparable(recipe_yaml: str) -> dict:
    """Recipe as saved, minus settings that may change between a run and its resume."""
    data = yaml.safe_load(recipe_yaml) or {}
    data.get("train", {}).pop("output_dir", None)
    data.get("train", {}).pop("num_workers", None)
    return data


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


def train(recipe: RecipeConfig, output_dir: str | Path | None = None, resume: bool = False, **kwargs: Any) -> TrainResult:
    """Python entry point: `radgen.train.train(load_recipe("radgen-small", size="tiny"), "runs/x")`."""
    return Trainer(recipe, output_dir=output_dir, resume=resume, **kwargs).train()


def end_distributed() -> None:
    """Take down the process group of a torchrun / accelerate launch, if one is up; call once, before
    the process exits. Why: a rank that exits with its gloo group alive can abort in the group's C++
    teardown ("terminate called without an active exception", SIGABRT; seen once in
    tests/train/test_distributed.py), failing a launch whose training finished. Not done inside
    `train()`, so a script may train twice in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
