"""`radgen train`, `radgen sweep`, `radgen plot`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from radgen.arguments import allow_intermixed

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a recipe (stages, checkpoints, resume, feature cache)",
                                  description="Train CONFIG (a recipe name or YAML file). Overrides are dotted key=value pairs, "
                                              "e.g. model.peft.r=8 train.optim.lr=1e-4 data.manifest=data/iu/manifest.jsonl.")
    _common(train)
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke runs)")
    train.set_defaults(func=run_train)

    sweep = subparsers.add_parser("sweep", help="grid search scored by validation loss after N steps",
                                  description="Train one short run per grid point and rank them by val loss "
                                              "(seed 000 protocol: 250 steps). Trials already finished are reused.")
    _common(sweep)
    sweep.add_argument("--grid", nargs="+", action="extend", required=True, metavar="KEY=V1,V2",
                       help="values to try, e.g. --grid model.peft.r=4,8,16 model.peft.alpha=16,32")
    sweep.add_argument("--steps", type=int, default=250, help="optimizer steps per trial (default 250)")
    sweep.add_argument("--gpus", default=None, help="comma-separated GPU ids: run trials in parallel, one process per GPU")
    sweep.set_defaults(func=run_sweep)

    fit = subparsers.add_parser("fit-findings", help="fit a grounded model's finding head on cached features, tune its thresholds",
                                description="Train only the finding head of MODEL (a saved model or a run) on the train split of "
                                            "--data until its validation loss stops improving, set per-observation thresholds "
                                            "for best F1 on the val split, and save the model to --out (default: in place).")
    fit.add_argument("model", help="a saved model folder, a run folder (its best/) or a shipped model name (radgen-small; needs --out)")
    fit.add_argument("--data", required=True, help="manifest with train and val splits (labels.chexpert, else report labels)")
    fit.add_argument("--extra-train", nargs="+", action="extend", default=[], metavar="MANIFEST",
                     help="more manifests whose train studies join --data's train split for the head only, e.g. IU-Phantom "
                          "renders of the same studies from other seeds (radgen data phantom --split train --seed 1)")
    fit.add_argument("--feature-cache-dir", default=None, help="frozen-encoder feature cache to reuse (default MODEL/../feature_cache)")
    fit.add_argument("--out", default=None, help="where to save the model (default: replace MODEL)")
    fit.add_argument("--max-epochs", type=int, default=None, help="default 300, or 25 for a head with encoder blocks")
    fit.add_argument("--patience", type=int, default=None,
                     help="epochs without a better val loss before stopping (default 30, or 4 for a head with encoder blocks)")
    fit.add_argument("--tune-encoder-blocks", type=int, default=None, metavar="N",
                     help="an N other than the model's: a new head with a trainable copy of the encoder's last N blocks (0: none), "
                          "fitted from scratch; default: keep the model's model.findings.tune_encoder_blocks")
    fit.add_argument("--members", type=int, default=None, metavar="K",
                     help="fit a new head of K members from seeds SEED..SEED+K-1 and average their logits "
                          "(model.findings.members, member_mean; 1: one new head); default: refit the model's head as it is")
    fit.add_argument("--add-members", type=int, default=None, metavar="K",
                     help="keep the model's fitted head and fit K more members from seeds SEED..SEED+K-1 (on --extra-train "
                          "too, if given), then tune the thresholds on the mean of all (the same head as one fit of all of "
                          "them with --members, when the data are the same)")
    fit.add_argument("--image-size", type=int, default=None, metavar="PX",
                     help="a new head that reads the images at PX (model.findings.image_size, e.g. 320 for small nodules; "
                          "needs encoder blocks); the decoder's encoder keeps its size. Default: keep the model's")
    fit.add_argument("--seed", type=int, default=0, help="seed of the first new member: its initial weights, dropout and batch order; member i gets "
                                                         "SEED+i (default 0)")
    fit.add_argument("--tail-lr", type=float, default=1e-4, help="learning rate of the head's encoder blocks (the head's own: 3e-4)")
    fit.add_argument("--thresholds-only", action="store_true",
                     help="keep the head's weights; only re-tune its per-observation thresholds on the val split of --data "
                          "(e.g. a site's own validation studies)")
    fit.add_argument("--no-progress", action="store_true")
    fit.set_defaults(func=run_fit_findings)

    plot = subparsers.add_parser("plot", help="loss / metric curves of a run as PNG")
    plot.add_argument("run_dir", help="a run folder (holds metrics.jsonl)")
    plot.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots)")
    plot.set_defaults(func=run_plot)


def _common(parser: argparse.ArgumentParser) -> None:
    allow_intermixed(parser)
    parser.add_argument("config", help="recipe name (see radgen/configs) or path to a recipe YAML; name:variant selects a variant")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.optim.lr=1e-4")
    parser.add_argument("--size", default=None, help="named size from the recipe's sizes (e.g. tiny)")
    parser.add_argument("--output-dir", default=None, help="run folder (default train.output_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def run_train(args: argparse.Namespace) -> int:
    from radgen.config import load_recipe
    from radgen.train.trainer import end_distributed, train

    recipe = load_recipe(args.config, args.overrides, size=args.size)
    result = train(recipe, args.output_dir, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
    end_distributed()
    best = f"best {result.best_metric:.4f} at step {result.best_step}" if result.best_metric is not None else "no validation split"
    print(f"trained {result.global_step} steps in {result.seconds:.0f} s ({best}; {result.skipped_steps} non-finite steps skipped"
          f"{'; stopped early' if result.stopped_early else ''}) → {Path(result.run_dir) / 'best'}")
    return 0


def run_fit_findings(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict, replace

    from radgen.errors import ConfigError
    from radgen.io import atomic_write_text
    from radgen.models import ReportGenerator
    from radgen.models.build import image_transform_for
    from radgen.models.findings import FindingEnsemble, build_finding_head, head_members
    from radgen.pipeline import MODEL_NAMES, resolve_model
    from radgen.train.data import load_splits
    from radgen.train.finding_head import fit_finding_head

    source = resolve_model(args.model)
    if args.out is None and Path(source).resolve() in {Path(folder).resolve() for folder in MODEL_NAMES.values()}:
        # the default writes in place: never into the installed package
        raise ConfigError(f"{args.model}: fit-findings saves into the model folder by default, and this is the shipped model "
                          "inside the installation; pass --out DIR")
    if args.thresholds_only:
        fitting = [flag for flag, value in (("--extra-train", args.extra_train), ("--max-epochs", args.max_epochs),
                                            ("--patience", args.patience), ("--tune-encoder-blocks", args.tune_encoder_blocks),
                                            ("--members", args.members), ("--add-members", args.add_members),
                                            ("--image-size", args.image_size)) if value not in (None, [])]
        if fitting:
            raise ConfigError(f"--thresholds-only keeps the head as it is; drop {', '.join(fitting)}")
    model = ReportGenerator.from_pretrained(str(source))
    recipe = model.recipe
    recipe.data.manifest = args.data
    if args.thresholds_only:
        return _retune_only(model, source, args)
    new_blocks = args.tune_encoder_blocks is not None and args.tune_encoder_blocks != recipe.model.findings.tune_encoder_blocks
    new_size = args.image_size is not None and args.image_size != model.head_image_size()
    if (new_blocks or new_size or args.members is not None or args.add_members is not None) and getattr(model, "findings", None) is None:
        raise ConfigError(f"recipe '{recipe.name}' has no finding head to fit (model.findings.enabled=false)")
    keep, kept_records = 0, []
    if args.add_members is not None:
        if new_blocks or new_size or args.members is not None:
            raise ConfigError("--add-members grows the model's head as it is; it cannot be combined with --members, or with a "
                              "--tune-encoder-blocks or --image-size other than the model's (fit a new head with those first)")
        if args.add_members < 1:
            raise ConfigError(f"--add-members must be at least 1, got {args.add_members}")
        keep = len(head_members(model.findings))
        kept_records = _fitted_members(Path(source), keep)
        cfg = recipe.model.findings
        cfg.members = keep + args.add_members
        added = build_finding_head(replace(cfg, members=args.add_members), model.encoder.hidden_size, model.encoder, seed=args.seed)
        model.findings = FindingEnsemble(head_members(model.findings) + head_members(added), mean=cfg.member_mean)
    elif new_blocks or new_size or args.members is not None:
        if args.members is not None and args.members < 1:
            raise ConfigError(f"--members must be at least 1, got {args.members}")
        if args.tune_encoder_blocks is not None:
            recipe.model.findings.tune_encoder_blocks = args.tune_encoder_blocks
        if args.members is not None:
            recipe.model.findings.members = args.members
        if args.image_size is not None:
            recipe.model.findings.image_size = None if args.image_size == model.encoder.image_size else args.image_size
        model.findings = build_finding_head(recipe.model.findings, model.encoder.hidden_size, model.encoder, seed=args.seed)
        model.image_transform = image_transform_for(model.encoder, recipe.model.findings.image_size)
    train_set, val_set = load_splits(recipe, model.image_transform, extra_train=args.extra_train)
    cache_dir = args.feature_cache_dir or Path(source).parent / "feature_cache"
    fit = fit_finding_head(model, train_set, val_set, cache_dir, recipe.model.findings.label_source, args.max_epochs,
                           args.patience, seed=args.seed, progress=not args.no_progress, tail_lr=args.tail_lr, keep=keep)
    for record, earlier in zip(fit.members, kept_records):
        record.update({**earlier, **record})  # what the earlier fit said of a kept member (its seed), re-measured here
    # what this fit trained on: members of one head may have been fitted on other data (--add-members --extra-train)
    trained_on = {"train_studies": len(train_set), "extra_train": [str(path) for path in args.extra_train or []]}
    for record in fit.members[keep:]:
        record.update(trained_on)
    out = Path(args.out or source)
    model.save_pretrained(out, base_weights=False)
    report = asdict(fit) if fit.members else {**asdict(fit), **trained_on}
    atomic_write_text(out / "finding_head_fit.json", json.dumps(report, indent=2) + "\n")
    what = (f"{len(fit.members)} members, mean best val loss {fit.val_loss:.4f}" if fit.members
            else f"best val loss {fit.val_loss:.4f} at epoch {fit.best_epoch}")
    print(f"finding head fitted: {what}, val micro-F1 {fit.val_micro_f1:.3f} (thresholds tuned on val) → {out}")
    return 0


def _retune_only(model, source: Path, args: argparse.Namespace) -> int:
    """`fit-findings --thresholds-only`: new thresholds, the same weights; finding_head_fit.json keeps
    the fit's record with the thresholds and val micro-F1 replaced (and says so)."""
    import json

    from radgen.errors import ConfigError
    from radgen.io import atomic_write_text
    from radgen.train.data import load_splits
    from radgen.train.finding_head import retune_thresholds

    _, val_set = load_splits(model.recipe, model.image_transform)
    if not val_set:
        raise ConfigError(f"{args.data}: no study has split 'val'; --thresholds-only tunes on the val split "
                          "(mark some labelled studies \"split\": \"val\")")
    cache_dir = args.feature_cache_dir or Path(source).parent / "feature_cache"
    micro_f1, thresholds = retune_thresholds(model, val_set, cache_dir, model.recipe.model.findings.label_source,
                                             progress=not args.no_progress)
    record_path = Path(source) / "finding_head_fit.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.update({"val_micro_f1": micro_f1, "thresholds": thresholds,
                   "thresholds_retuned_on": f"{Path(args.data).name}, {len(val_set)} val studies"})
    out = Path(args.out or source)
    model.save_pretrained(out, base_weights=False)
    atomic_write_text(out / "finding_head_fit.json", json.dumps(record, indent=2) + "\n")
    print(f"finding head thresholds re-tuned on {len(val_set)} val studies: val micro-F1 {micro_f1:.3f} → {out}")
    return 0


def _fitted_members(model_dir: Path, count: int) -> list[dict]:
    """One record for each of the `count` members of the head saved in `model_dir`: what its
    finding_head_fit.json says of them (their seeds, and what they trained on where it says), or
    nothing for a head fitted otherwise."""
    import json

    path = model_dir / "finding_head_fit.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    if len(report.get("members") or []) == count:
        return [dict(member) for member in report["members"]]
    if count == 1 and "seed" in report:  # one head's fit is recorded at the top level
        return [{key: report[key] for key in ("seed", "train_studies", "extra_train") if key in report}]
    return [{} for _ in range(count)]


def run_sweep(args: argparse.Namespace) -> int:
    from radgen.train.sweep import run_sweep as sweep

    out = sweep(args.config, args.grid, args.overrides, size=args.size, steps=args.steps, output_dir=args.output_dir,
                gpus=args.gpus.split(",") if args.gpus else None, progress=not args.no_progress)
    print(out.read_text() if out.suffix == ".md" else out)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from radgen.train.plot import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0
