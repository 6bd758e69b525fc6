"""Does the model report what the image shows? The model next to every baseline, in one run.

    PYTHONPATH=. python benchmarks/grounding.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --split test --decodings greedy,beam3 --json grounding.json

Systems, all on the same studies of `--split`, scored by `radgen.metrics.evaluate` (findings against
the manifest's image truth `labels.chexpert`, BLEU-4, METEOR 1.5, ROUGE-L, CIDEr-D, 1,000 bootstrap
resamples) and compared pairwise with the model (paired bootstrap CI of the difference and
approximate-randomization p-value, `radgen.metrics.stats.paired_test`):

* the model, once per decoding in `--decodings` (greedy = drafted greedy with the model's own
  settings, retrieval guide included where its recipe sets one; unguided = the same with
  guide_margin 0, the decoder's own greedy text; guided = retrieval-guided greedy with
  `--guide-pool`, `--guide-margin` and `--guide-floor` as min_new_tokens, the model's report memory
  or, without one, the manifest's train split; greedy-raw = greedy without the findings-consistency
  edits; any-words = greedy without the known-words rule; beamN = beam search); a
  decoding may name the decoder's inference dtype after a colon, e.g. `greedy,greedy:bfloat16`
  (`radgen.config.INFERENCE_DTYPES`; default auto, as `radgen generate`);
* `classifier-template`: the model's own finding head + one template sentence per finding;
* the image-free baselines: `nearest-train` (indication text), `consensus-train` (the consensus of
  the `--guide-pool` nearest, copied whole), `random-train`, `most-frequent`;
* the reference reports themselves (the ceiling of the findings measure: what the labeler reads
  from the radiologist's text against what the image shows).

`--split-images` takes the `--split` studies' images from another manifest of the same studies, e.g.
rendered again with another seed (`radgen data phantom --manifest iu.jsonl --split test --seed 11
--out test_seed11`); labels, reports and the baselines' train split stay `--data`'s. How far the
figures move between renders of the same studies is how far one test render is from another.

Also: distinct reports as a share of the studies, the share of reports with a word that no report of the
train split has (cleaned as the recipe trains: misspelt or made-up words), and the generation time of
each decoding.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from radgen.machine import cpu_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grounded import grounded_parser  # noqa: E402

KEYS = ["findings_abnormal_micro_f1", "findings_abnormal_macro_f1", "findings_cardiomegaly_f1", "findings_support_devices_f1",
        "findings_pleural_effusion_f1", "findings_edema_f1", "findings_lung_lesion_f1", "findings_lung_opacity_f1",
        "findings_atelectasis_f1", "bleu4", "meteor", "rouge_l", "cider_d"]
SHORT = {"findings_abnormal_micro_f1": "finding micro-F1", "findings_abnormal_macro_f1": "macro-F1",
         "findings_cardiomegaly_f1": "cardiomeg.", "findings_support_devices_f1": "devices", "findings_pleural_effusion_f1": "effusion",
         "findings_edema_f1": "edema", "findings_lung_lesion_f1": "lesion", "findings_lung_opacity_f1": "opacity",
         "findings_atelectasis_f1": "atelectasis", "bleu4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D"}


def _decoding(name: str, guide_margin: float = 5.0, guide_floor: int = 50, guide_pool: int = 40) -> dict:
    name = name.split(":")[0]
    if name == "greedy":
        return {"num_beams": 1}
    if name == "unguided":  # the decoder's own greedy text, whatever the recipe's guide
        return {"num_beams": 1, "guide_margin": 0.0}
    if name == "guided":  # retrieval-guided greedy (radgen.models.memory), the val-picked margin and floor by default
        return {"num_beams": 1, "guide_margin": guide_margin, "min_new_tokens": guide_floor, "guide_pool": guide_pool}
    if name == "greedy-raw":  # the decoder's own text, without the findings-consistency edits
        return {"num_beams": 1, "consistent_findings": False}
    if name == "any-words":  # greedy without the known-words rule (radgen.models.lexicon)
        return {"num_beams": 1, "known_words": False}
    if name.startswith("beam") and name[4:].isdigit():
        return {"num_beams": int(name[4:])}
    raise SystemExit(f"--decodings: '{name}' is not greedy, unguided, guided, greedy-raw, any-words or beamN")


def _dtype(name: str) -> str:
    from radgen.config import INFERENCE_DTYPES

    dtype = name.split(":", 1)[1] if ":" in name else "auto"
    if dtype not in INFERENCE_DTYPES:
        raise SystemExit(f"--decodings: '{name}': dtype '{dtype}' is not one of {', '.join(INFERENCE_DTYPES)}")
    return dtype


def with_images_from(studies: list, manifest: str) -> list:
    """`studies` with each one's images taken from `manifest` (by study id), as absolute paths."""
    from dataclasses import replace

    from radgen.data.study import read_manifest

    root = Path(manifest).resolve().parent
    images = {s.study_id: [replace(image, path=str(root / image.path)) for image in s.images] for s in read_manifest(manifest)}
    missing = [s.study_id for s in studies if not images.get(s.study_id)]
    if missing:
        raise SystemExit(f"--split-images {manifest}: {len(missing)} of the {len(studies)} studies have no images there "
                         f"(first: {missing[0]}); render the same split of the same reports")
    return [replace(s, images=images[s.study_id]) for s in studies]


def main(argv: list[str] | None = None) -> dict:
    from radgen.data.study import read_manifest
    from radgen.generate.classifier_template import classifier_template_predictions
    from radgen.generate.decode import generate_reports, load_model, seed_draft_table, select_studies
    from radgen.metrics.baselines import baseline_predictions
    from radgen.metrics.meteor import MeteorScorer, MeteorUnavailable
    from radgen.pipeline import resolve_model

    parser = grounded_parser(__doc__, split="test")
    parser.add_argument("--decodings", default="greedy,beam3")
    parser.add_argument("--guide-margin", type=float, default=5.0, help="the `guided` decoding's margin (default: val's pick)")
    parser.add_argument("--guide-floor", type=int, default=50, help="the `guided` decoding's min_new_tokens (default: val's pick)")
    parser.add_argument("--guide-pool", type=int, default=40, help="the `guided` decoding's guide pool (generate.guide_pool; "
                                                                    "default: val's pick) and consensus-train's pool")
    parser.add_argument("--split-images", default=None, metavar="MANIFEST",
                        help="take the --split studies' images from this manifest (the same studies rendered again)")
    args = parser.parse_args(argv)

    studies = read_manifest(args.data)
    test = select_studies(studies, args.split, args.limit)
    if args.split_images:
        test = with_images_from(test, args.split_images)
    root = Path(args.data).parent
    # every name parsed before any model loads: a typo fails at once, not after minutes of decoding
    decodings = [(name, _decoding(name, args.guide_margin, args.guide_floor, args.guide_pool), _dtype(name)) for name in args.decodings.split(",")]
    models = {dtype: load_model(resolve_model(args.model), dtype=dtype) for dtype in dict.fromkeys(d for _, _, d in decodings)}
    model = next(iter(models.values()))
    if any(name.startswith("guided") for name, _, _ in decodings):
        from radgen.models.memory import memory_from_studies

        for each in models.values():  # a model folder without a memory: the manifest's train split
            if each.report_memory is None:
                each.report_memory = memory_from_studies(select_studies(studies, "train"), each.recipe)
    systems: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    for name, settings, dtype in decodings:
        decoding_model = models[dtype]
        decoding_model.report_draft.clear()  # each decoding starts from the shipped draft table, not the previous run's reports
        seed_draft_table(decoding_model, resolve_model(args.model))
        start = time.perf_counter()
        systems[f"model ({name})"] = generate_reports(decoding_model, test, root=root, batch_size=args.batch_size, **settings)
        seconds[f"model ({name})"] = time.perf_counter() - start
    systems["classifier-template"] = classifier_template_predictions(model, test, root=root)
    ids = {s.study_id for s in test}
    for kind in ("nearest-train", "consensus-train", "random-train", "most-frequent"):
        rows = baseline_predictions(studies, kind, test_split=args.split, pool=args.guide_pool)
        systems[kind] = [r for r in rows if r["study_id"] in ids]
    systems["reference reports (ceiling)"] = [{"study_id": s.study_id, "findings": s.report("findings")} for s in test]

    metrics = ["findings", "bleu", "meteor", "rouge_l", "cider_d"]
    try:  # one METEOR session for every system: paired tests re-score resampled METEOR statistics through it
        scorer = MeteorScorer()
    except MeteorUnavailable as err:
        print(f"note: METEOR skipped ({err})", file=sys.stderr)
        scorer, metrics = None, [m for m in metrics if m != "meteor"]
    from radgen.models.memory import memory_from_studies

    train = memory_from_studies(select_studies(studies, "train"), model.recipe)
    known = {word for report in train.reports for word in train.cleaned(report).split()}
    try:
        out = _score(args, systems, seconds, test, metrics, scorer, known, train.cleaned)
    finally:
        if scorer is not None:
            scorer.close()
    print(table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


def _score(args, systems, seconds, test, metrics, scorer, known: set[str], clean) -> dict:
    from radgen.metrics.evaluate import evaluate
    from radgen.metrics.stats import paired_test

    results = {name: evaluate(rows, test, metrics=metrics, bootstrap=args.bootstrap, return_statistics=True, meteor_scorer=scorer)
               for name, rows in systems.items()}
    first = next(iter(systems))
    out: dict = {"split": args.split, "split_images": args.split_images, "studies": len(test), "scored": results[first]["n_studies"], "model": args.model,
                 "observations": results[first]["protocol"].get("findings_observations"), "seconds": seconds,
                 "machine": {"cpu": cpu_summary()}, "systems": {}, "paired_vs": {}}
    for name, result in results.items():
        texts = [r.get("findings", "") for r in systems[name]]
        out["systems"][name] = {k: result["corpus"].get(k) for k in KEYS} | {
            "ci95": {k: result["ci95"].get(k) for k in KEYS}, "distinct_reports": len(set(texts)) / max(len(texts), 1),
            "unknown_word_reports": sum(bool(set(clean(t).split()) - known) for t in texts) / max(len(texts), 1),
            "unknown_words": dict(Counter(w for t in texts for w in set(clean(t).split()) - known).most_common(12))}
    for name in results:
        if name.startswith("model"):
            out["paired_vs"][name] = {}
            for other in ("classifier-template", "nearest-train", "consensus-train"):
                paired = paired_test(results[other]["_statistics"], results[name]["_statistics"])
                out["paired_vs"][name][other] = {k: {"delta": paired[k].delta, "ci95": list(paired[k].ci), "p": paired[k].p_value}
                                                 for k in KEYS if k in paired}
    if len([n for n in results if n.startswith("model")]) > 1:
        names = [n for n in results if n.startswith("model")]
        paired = paired_test(results[names[0]]["_statistics"], results[names[1]]["_statistics"])
        out["paired_decodings"] = {"a": names[0], "b": names[1],
                                   "b_minus_a": {k: {"delta": paired[k].delta, "ci95": list(paired[k].ci), "p": paired[k].p_value}
                                                 for k in KEYS if k in paired}}
    return out


def table(out: dict) -> str:
    lines = [f"{out['split']} split: {out['scored']} studies with a reference report; findings over {out['observations']}",
             "| system | " + " | ".join(SHORT[k] for k in KEYS) + " | distinct reports | unknown-word reports |",
             "|---|" + "---|" * (len(KEYS) + 2)]
    for name, row in out["systems"].items():
        cells = []
        for key in KEYS:
            value, ci = row.get(key), row["ci95"].get(key)
            cells.append("–" if value is None else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and key == KEYS[0] else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * row['distinct_reports']:.0f}% | "
                     f"{100 * row['unknown_word_reports']:.0f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
