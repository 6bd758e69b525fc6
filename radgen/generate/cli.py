"""`radgen generate` (batched, resumable report generation) and `radgen calibrate`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from radgen.config import INFERENCE_DTYPES

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="draft reports for an image, a folder of images or a manifest (batched, resumable)",
        description="Write one JSONL row per study (per image for an image or folder input): study_id, the generated "
                    "section, token log-probs, sentences with confidence. The model defaults to the shipped radgen-small; "
                    "settings default to the recipe's generate: section. Re-running resumes: studies already in OUT "
                    "(or OUT.partial) are skipped.")
    add_model_arguments(gen)
    gen.add_argument("--out", required=True, help="predictions JSONL to write")
    gen.add_argument("--section", default="findings", choices=["findings", "impression"], help="section to generate (default findings)")
    gen.add_argument("--num-beams", type=int, default=None, help="beam width (default: recipe, usually 3); 1 = greedy")
    gen.add_argument("--greedy", action="store_true", help="same as --num-beams 1")
    gen.add_argument("--max-new-tokens", type=int, default=None, help="default: recipe")
    gen.add_argument("--min-new-tokens", type=int, default=None, help="no end of report before this many tokens (default: recipe)")
    gen.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    gen.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    gen.add_argument("--top-p", type=float, default=None, help="sampling nucleus mass")
    gen.add_argument("--repetition-penalty", type=float, default=None)
    gen.add_argument("--no-repeat-ngram", type=int, default=None, help="forbid repeating n-grams of this size (0 = off)")
    gen.add_argument("--batch-size", type=int, default=None, help="studies per batch (default: recipe, 16)")
    gen.add_argument("--lanes", type=int, default=None,
                     help="CPU: batches decoded at once, each on its share of the threads (default: 2 for a bf16 or fp16-weight "
                          "decoder with 2+ threads, else 1; or $RADGEN_DECODE_LANES); the same findings, more reports a "
                          "second, ~0.7 GB more memory (docs/benchmarks.md, \"Two decoding lanes\")")
    gen.add_argument("--decoder-text", action="store_true",
                     help="grounded models: return the decoder's own text, without the findings-consistency edits")
    gen.add_argument("--any-words", action="store_true",
                     help="models with a report memory: let the decoder write words its training reports lack (default: "
                          "known words only, radgen.models.lexicon)")
    gen.add_argument("--draft-tokens", type=int, default=None,
                     help="greedy only: tokens drafted a decoder pass from earlier reports and kept where the decoder "
                          "agrees (same text, fewer passes; on CPU fewer a row in large batches); 0 = plain greedy (default: recipe, 16)")
    gen.add_argument("--guide-margin", type=float, default=None,
                     help="greedy, models with a report memory: keep the guide's token (a stored report picked by indication, "
                          "--guide-pool) where the decoder's logit for it is within this margin of its own choice; 0 = the "
                          "decoder's greedy text (default: recipe)")
    gen.add_argument("--guide-pool", type=int, default=None,
                     help="with --guide-margin: the guide is the consensus report of this many nearest-indication reports "
                          "(the one most like the others); 1 = the nearest report (default: recipe)")
    gen.add_argument("--temperature-scale", default=None, metavar="T|calib.json",
                     help="confidence temperature (a number or the calib.json of `radgen calibrate`); changes confidences only")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (per batch, so resumed runs match)")
    gen.add_argument("--overwrite", action="store_true", help="ignore earlier rows in OUT / OUT.partial and start again")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    gen.set_defaults(func=run_generate)

    cal = subparsers.add_parser(
        "calibrate", help="ECE + reliability diagram of sentence confidence; fit the confidence temperature",
        description="Score each generated sentence as correct when its CheXpert observations agree with the reference "
                    "(study labels['chexpert'] if present, e.g. IU-Phantom's exact labels, else the labeler on the "
                    "reference report), then report ECE, draw a reliability diagram and fit T on these (validation) predictions.")
    cal.add_argument("--pred", required=True, help="predictions JSONL from `radgen generate` (validation split)")
    cal.add_argument("--ref", required=True, help="manifest JSONL with the reference studies")
    cal.add_argument("--out", required=True, help="calib.json to write (PNG next to it)")
    cal.add_argument("--section", default="findings", choices=["findings", "impression"])
    cal.add_argument("--bins", type=int, default=10, help="equal-width confidence bins (default 10)")
    cal.set_defaults(func=run_calibrate)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT/--model/--split/--limit/--device/--no-merge-lora/--dtype (shared with `radgen explain`)."""
    parser.add_argument("input", nargs="?", default=None, metavar="IMAGE_OR_DIR_OR_MANIFEST",
                        help="a PNG/JPEG/DICOM image, a folder of them (recursed; unreadable files are counted and skipped; "
                             "a frontal and a lateral view of one study become one study) or a manifest .jsonl")
    parser.add_argument("--one-study-per-image", action="store_true",
                        help="in a folder, every image is a study of its own (default: a frontal and a lateral view of one study, "
                             "by DICOM StudyInstanceUID or by file names that differ only in the view word, e.g. x_PA.png and "
                             "x_LATERAL.png, are one study, and the finding head reads both)")
    parser.add_argument("--data", default=None, help="same as IMAGE_OR_DIR_OR_MANIFEST (kept for existing scripts)")
    parser.add_argument("--model", default=None,
                        help="a shipped model name (radgen-small, the default), a save_pretrained folder or a training run folder (uses RUN/best)")
    parser.add_argument("--root", default=None, help="image root of a manifest (default: the manifest's folder)")
    parser.add_argument("--split", default=None, help="only studies of this split (e.g. test)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N studies")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--no-merge-lora", action="store_true", help="keep LoRA adapters separate (default: merge for inference)")
    parser.add_argument("--dtype", default="auto", choices=INFERENCE_DTYPES,
                        help="decoder precision (default auto: bfloat16 on a CUDA GPU and on a CPU that computes bf16 natively "
                             "(AVX512-BF16/AMX; 1.1-1.3x fp32 on a Zen 5, same findings, changes some greedy wording); float16 "
                             "on other x86-64 CPUs with AVX2: fp16 weights, fp32 arithmetic (fbgemm; faster than fp32 on an AVX2 "
                             "Zen 3, same findings, words as fp32's in most reports and independent of the batch); float32 "
                             "elsewhere (the same reports as plain fp32); int8: CPU dynamic quantization after channel smoothing "
                             "(radgen model calibrate-int8), same findings, but its wording changes with batch size and "
                             "batch-mates; docs/benchmarks.md)")


def resolve_inputs(args: argparse.Namespace, only_ids: set[str] | None = None):
    """The studies named by INPUT (or --data), filtered by only_ids, --split and --limit (radgen.generate.inputs.Inputs)."""
    from radgen.errors import ConfigError
    from radgen.generate.decode import select_studies
    from radgen.generate.inputs import collect_inputs

    if args.input is not None and args.data is not None and args.input != args.data:
        raise ConfigError(f"give the input once: either {args.input} or --data {args.data}")
    source = args.input if args.input is not None else args.data
    if source is None:
        raise ConfigError("no input: pass an image, a folder of images or a manifest .jsonl, "
                          "e.g. `radgen generate scans/ --out preds.jsonl`")
    inputs = collect_inputs(source, pair_views=not getattr(args, "one_study_per_image", False))
    if only_ids is not None:
        inputs.studies = [s for s in inputs.studies if s.study_id in only_ids]
    inputs.studies = select_studies(inputs.studies, args.split, args.limit)
    if args.root is not None:
        inputs.root = Path(args.root)
    return inputs


def load_inputs(args: argparse.Namespace, only_ids: set[str] | None = None):
    """(model, studies, root) from the shared arguments; only_ids keeps those studies (before --limit)."""
    model, inputs = _model_and_inputs(args, only_ids)
    if inputs.skipped:
        log.warning("%s: %s", args.input or args.data, inputs.skipped_text())
    return model, inputs.studies, inputs.root


def _model_and_inputs(args: argparse.Namespace, only_ids: set[str] | None = None):
    import torch

    from radgen.generate.decode import load_model
    from radgen.pipeline import resolve_model

    inputs = resolve_inputs(args, only_ids)  # bad input fails before the (slow) model load
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(resolve_model(args.model), device=device, merge_lora=not args.no_merge_lora,
                       dtype=getattr(args, "dtype", "auto"))
    return model, inputs


def run_generate(args: argparse.Namespace) -> int:
    from radgen.generate.confidence import load_temperature
    from radgen.generate.decode import generate_to_file

    from radgen.generate.decode import already_generated

    temperature_scale = load_temperature(args.temperature_scale)
    if args.lanes is not None and args.lanes < 1:  # before the (slow) model load
        from radgen.errors import ConfigError

        raise ConfigError(f"--lanes {args.lanes}: decoding lanes must be at least 1")
    if not args.overwrite:
        inputs = resolve_inputs(args)
        if already_generated(inputs.studies, args.out):  # say so before the (slow) model load
            print(f"generate: 0 generated, {len(inputs.studies)} already done → {args.out} (pass --overwrite to generate again)")
            return 0
    model, inputs = _model_and_inputs(args)
    settings = dict(num_beams=1 if args.greedy else args.num_beams, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                    do_sample=True if args.sample else None, temperature=args.temperature, top_p=args.top_p,
                    repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram,
                    batch_size=args.batch_size, draft_tokens=args.draft_tokens, guide_margin=args.guide_margin,
                    guide_pool=args.guide_pool,
                    consistent_findings=False if getattr(args, "decoder_text", False) else None,
                    known_words=False if getattr(args, "any_words", False) else None)
    if args.sample and args.num_beams is None:
        settings["num_beams"] = 1
    counts = generate_to_file(model, inputs.studies, args.out, root=inputs.root, overwrite=args.overwrite, section=args.section,
                              confidence_temperature=temperature_scale, seed=args.seed, progress=not args.no_progress,
                              lanes=args.lanes, **settings)
    skipped = f", {inputs.skipped_text()}" if inputs.skipped else ""
    paired = f" ({inputs.paired} of the {len(inputs.studies)} studies a frontal + lateral pair)" if inputs.paired else ""
    print(f"generate: {counts['generated']} generated, {counts['skipped']} already done{skipped}{paired} → {args.out}")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from radgen.data.study import read_manifest
    from radgen.generate.confidence import calibrate
    from radgen.io import read_jsonl

    result = calibrate(read_jsonl(args.pred), read_manifest(args.ref), args.out, section=args.section, n_bins=args.bins)
    print(f"calibrate: {result['checkable']} sentences, accuracy {result['accuracy']:.3f}, ECE {result['ece']:.4f} "
          f"→ T={result['temperature']:.3f}, ECE {result['ece_scaled']:.4f}; wrote {args.out} and {result['png']}")
    return 0
