"""Batched report generation over studies, with per-sentence confidence and resumable output.

    from radgen.generate import load_model, generate_reports
    model = load_model("runs/iu/best")
    rows = generate_reports(model, studies, root="data/iu", num_beams=3)

Decoding is the model's `generate` (HF generate underneath: KV cache, beam search, sampling,
repetition penalty, no-repeat n-grams). Settings default to the recipe's `generate:` section.

Resumable output (`generate_to_file`): rows are appended to `OUT.partial` and flushed + fsynced
after every batch; a run killed mid-write leaves at most one incomplete trailing line, which the
next run cuts off before appending. Only when every study is done is `OUT.partial` renamed onto
`OUT`, so `OUT` is always a complete, consistent file (or absent / the previous complete one).
A finished `OUT` also seeds a new run, so extending `--limit` or adding studies only decodes the
new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radgen.config import GenerateConfig
from radgen.data.dataset import StudyDataset, collate_studies, lateral_inputs, per_study_images
from radgen.data.study import Study
from radgen.errors import ConfigError, DataError, WeightsError
from radgen.generate.confidence import geometric_mean_probability, sentence_confidences
from radgen.generate.lanes import model_lanes, run_in_lanes

log = logging.getLogger(__name__)

SECTIONS = ("findings", "impression")
CONFIG_FILE = "radgen_config.yaml"


@dataclass
class GenerationSettings(GenerateConfig):
    """The recipe's `generate:` section (same fields) plus validation and HF generate kwargs."""

    @classmethod
    def from_recipe(cls, recipe: Any, **overrides: Any) -> "GenerationSettings":
        """The recipe's `generate:` section with non-None overrides on top."""
        base = {f.name: getattr(recipe.generate, f.name) for f in dataclasses.fields(cls) if hasattr(recipe.generate, f.name)}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {sorted(unknown)}")
        base.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**base)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("--num-beams, --max-new-tokens and --batch-size must be >= 1")
        if self.min_new_tokens < 0:
            raise ConfigError(f"--min-new-tokens must be >= 0, got {self.min_new_tokens}")
        if self.draft_tokens < 0:
            raise ConfigError("--draft-tokens must be >= 0 (0 = plain greedy decoding)")
        if not self.guide_margin >= 0:
            raise ConfigError(f"--guide-margin must be >= 0 (0 = the decoder's greedy text), got {self.guide_margin}")
        if not (isinstance(self.guide_pool, int) and self.guide_pool >= 1):
            raise ConfigError(f"--guide-pool must be an integer >= 1 (1 = the nearest report itself), got {self.guide_pool}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ConfigError("sampling needs --temperature > 0 and 0 < --top-p <= 1")

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = {k: v for k, v in dataclasses.asdict(self).items() if k != "batch_size"}
        # a recipe's floor never outlasts a shorter --max-new-tokens the user asked for
        kwargs["min_new_tokens"] = min(self.min_new_tokens, self.max_new_tokens)
        return kwargs


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A save_pretrained folder, or a training run folder (its best/ model)."""
    path = Path(path)
    for candidate in (path, path / "best"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise WeightsError(f"{path}: no {CONFIG_FILE} here or in {path / 'best'}; pass a ReportGenerator.save_pretrained "
                       f"folder or a training run folder that has best/")


def load_model(path: str | os.PathLike, device: str | None = None, merge_lora: bool = True, dtype: str = "auto",
               prepare: bool = True):
    """Load a model for inference: eval mode, LoRA merged into the decoder unless merge_lora=False.

    prepare=False returns the model as stored (eval mode, fp32, LoRA unmerged, no draft table; dtype
    and merge_lora unused): what `radgen model export` saves and what a plain HF + peft user runs.

    dtype "auto" (default) runs the decoder in bfloat16 on a CUDA GPU with bf16 and on a CPU that
    computes bf16 natively (AVX512-BF16/AMX; `radgen.models.fast.native_bf16_cpu`), with fp16 weights
    and fp32 arithmetic on other x86-64 CPUs where fbgemm runs (AVX2; `radgen.models.half_weights`),
    else in fp32; "float32", "bfloat16", "float16" or "int8" (CPU dynamic quantization) force one. Measured speed and agreement with fp32: docs/benchmarks.md, Performance.
    """
    from radgen.models import ReportGenerator
    from radgen.models.fast import prepare_for_inference
    from radgen.models.int8 import load_activation_ranges

    directory = resolve_model_dir(path)
    model = ReportGenerator.from_pretrained(str(directory), device=device)
    model.eval()
    if not prepare:
        return model
    # read only for int8: a damaged ranges file must not stop fp32/bf16 loading
    ranges = load_activation_ranges(directory) if dtype == "int8" else None
    prepare_for_inference(model, dtype, merge=merge_lora, int8_ranges=ranges)
    seed_draft_table(model, directory)
    return model


DRAFT_REPORTS_FILE = "draft_reports.txt"


def seed_draft_table(model: Any, directory: str | os.PathLike) -> int:
    """Seed greedy decoding's draft table from DIR/draft_reports.txt (one report a line, e.g. the
    model's own reports on a validation split), so the first reports of a process decode fast too.
    Speed only: drafted decoding keeps the greedy text whatever the table holds."""
    path = Path(directory) / DRAFT_REPORTS_FILE
    if not path.is_file():
        return 0
    reports = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    model.add_draft_reports(reports)
    return len(reports)


def select_studies(studies: Sequence[Study], split: str | None = None, limit: int | None = None) -> list[Study]:
    chosen = [s for s in studies if split is None or s.split == split]
    if split is not None and not chosen:
        splits = sorted({str(s.split) for s in studies})
        raise DataError(f"no study has split '{split}' (splits present: {', '.join(splits)}); pass --split with one of them")
    return chosen[:limit] if limit is not None else chosen


def generation_dataset(model: Any, studies: Sequence[Study], root: str | os.PathLike | None, section: str) -> StudyDataset:
    """The recipe's image selection and cleaning, keeping studies without a reference report.

    `generate` writes one report per study, so "list" and "each_frontal" recipes decode from the first frontal image.
    """
    data = model.recipe.data
    # a file handed to `generate` has view UNKNOWN unless its name or DICOM header names one
    # (radgen.generate.inputs): a recipe trained on some views reads it rather than refusing the study
    views = (*data.views, "UNKNOWN") if data.views else None
    return StudyDataset(list(studies), model.image_transform, root=root, section=section, cleaning=data.cleaning,
                        images=per_study_images(data.images), max_images=data.max_images,
                        views=views, drop_empty_reports=False, context_section=model.recipe.model.context.section,
                        lateral=hasattr(model, "findings") and model.findings.lateral, colour=data.colour)


def study_batches(dataset: StudyDataset, batch_size: int) -> Iterator[dict[str, Any]]:
    for start in range(0, len(dataset), batch_size):
        yield collate_studies([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])


def prediction_row(model: Any, study_id: str, report: Any, section: str, confidence_temperature: float = 1.0) -> dict[str, Any]:
    """One predictions.jsonl row from a GeneratedReport."""
    other = "impression" if section == "findings" else "findings"
    sentences = sentence_confidences(model.tokenizer, report.token_ids, report.token_logprobs, confidence_temperature)
    row = {
        "study_id": study_id,
        section: report.text,
        other: "",
        "token_logprobs": [round(v, 5) for v in report.token_logprobs],
        "tokens": list(report.tokens),
        "sentences": sentences,
        "confidence": geometric_mean_probability(report.token_logprobs, confidence_temperature),
        "confidence_temperature": confidence_temperature,
    }
    if getattr(report, "finding_probs", None) is not None:
        # grounded models: why a sentence was written (the head's probability per observation) and
        # which findings the prompt named
        row["finding_probs"] = dict(report.finding_probs)
        row["findings_predicted"] = list(report.findings or [])
    if getattr(report, "edits", None):
        row["finding_edits"] = list(report.edits)  # what the findings-consistency step changed
    if getattr(report, "guide", None):
        # retrieval-guided decoding: the stored report it could borrow phrasing from, and whose it is
        row["guide_report"], row["guide_study_id"] = report.guide, report.guide_study_id
    return row


def generate_reports(model: Any, studies: Sequence[Study], root: str | os.PathLike | None = None, section: str = "findings",
                     confidence_temperature: float = 1.0, progress: bool = True, seed: int = 0,
                     on_batch: Callable[[list[dict[str, Any]]], None] | None = None, lanes: int | None = None,
                     **settings: Any) -> list[dict[str, Any]]:
    """Generate one report per study; returns prediction rows (see `prediction_row`).

    settings: GenerationSettings fields (num_beams, max_new_tokens, do_sample, temperature, top_p,
    repetition_penalty, no_repeat_ngram_size, batch_size); None or missing = the recipe's value.
    on_batch is called with each batch's rows as soon as they exist (streaming writers), in order.
    lanes: batches decoded at once on a CPU (`radgen.generate.lanes.pick_lanes`; None: $RADGEN_DECODE_LANES,
    else 2 for a bf16 or fp16-weight decoder where torch has 2+ threads, else 1); sampling decodes one batch at a time,
    so that a resumed run draws the same reports.
    """
    if section not in SECTIONS:
        raise ConfigError(f"--section must be one of {', '.join(SECTIONS)}, got '{section}'")
    options = GenerationSettings.from_recipe(model.recipe, **settings)
    if not studies:
        return []
    dataset = generation_dataset(model, studies, root, section)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), unit="study", desc="generate")
    rows: list[dict[str, Any]] = []
    model.eval()
    batches = -(-len(dataset) // options.batch_size)
    lanes = model_lanes(model, batches, lanes, sampling=bool(options.do_sample))

    def decode(batch: dict[str, Any]) -> list[dict[str, Any]]:
        if options.do_sample:
            # a seed per batch derived from its first study: a resumed run samples the same reports
            digest = hashlib.sha256(f"{seed}:{batch['study_ids'][0]}".encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little") % 2**63)
        reports = model.generate(pixel_values=batch["pixel_values"], contexts=batch.get("contexts"),
                                 **lateral_inputs(batch), **options.generate_kwargs())
        return [prediction_row(model, sid, rep, section, confidence_temperature) for sid, rep in zip(batch["study_ids"], reports)]

    try:
        for batch_rows in run_in_lanes(decode, study_batches(dataset, options.batch_size), lanes, count=batches):
            rows.extend(batch_rows)
            if on_batch is not None:
                on_batch(batch_rows)
            if bar is not None:
                bar.update(len(batch_rows))
    finally:
        if bar is not None:
            bar.close()
    return rows


# -- resumable writer ---------------------------------------------------------------------------------

def _read_complete_rows(path: Path, truncate: bool) -> list[dict[str, Any]]:
    """Rows of a JSONL file, ignoring (and optionally cutting off) an incomplete trailing line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1  # everything after the last newline is a partial write
    if truncate and cut < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
    rows = []
    for number, line in enumerate(data[:cut].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{path}:{number}: not valid JSON; delete the file or pass --overwrite to start again") from None
    return rows


def already_generated(studies: Sequence[Study], out: str | os.PathLike) -> bool:
    """True when OUT is a finished predictions file holding every study (nothing to do, no model needed)."""
    out = Path(out)
    if not out.is_file() or out.with_name(out.name + ".partial").exists():
        return False
    done = {str(row.get("study_id")) for row in _read_complete_rows(out, truncate=False)}
    return all(s.study_id in done for s in studies)


def generate_to_file(model: Any, studies: Sequence[Study], out: str | os.PathLike, root: str | os.PathLike | None = None,
                     overwrite: bool = False, **kwargs: Any) -> dict[str, int]:
    """Generate for `studies` into `out` (JSONL), resuming from earlier rows; see the module docstring."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        partial.unlink(missing_ok=True)
    elif not partial.exists() and out.is_file():
        # start from the finished file; it stays untouched until the new one is complete
        rows = _read_complete_rows(out, truncate=False)
        with open(partial, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            handle.flush()
            os.fsync(handle.fileno())
    done = {str(row.get("study_id")) for row in _read_complete_rows(partial, truncate=True)}
    todo = [s for s in studies if s.study_id not in done]
    if done:
        log.info("generate: %d studies already in %s, %d to go", len(studies) - len(todo), partial if todo else out, len(todo))

    with open(partial, "a", encoding="utf-8") as handle:
        def append(rows: list[dict[str, Any]]) -> None:
            # one write per batch of complete lines, then fsync: a kill leaves whole rows + at most one partial line
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())

        generate_reports(model, todo, root=root, on_batch=append, **kwargs)
    os.replace(partial, out)
    return {"generated": len(todo), "skipped": len(studies) - len(todo)}
