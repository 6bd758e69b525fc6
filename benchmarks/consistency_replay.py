"""What does each findings-consistency rule do to a grounded model's reports? Decode once, replay the rules.

    PYTHONPATH=. python benchmarks/consistency_replay.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --split val --json consistency_val.json

The model's own greedy text (the recipe's decoding, `consistent_findings=False`) is generated once for
the studies of `--split`; `radgen.models.consistency.make_consistent` is then applied to it in turn,
with the head's findings of each study:

* `decoder text`: no edits;
* `named only`: statements of the named findings added, denials of them dropped (radgen's rule
  before 2026-11-30: `make_consistent(text, findings)`);
* `named + unnamed`: also drops sentences stating an observation the head covers but did not name
  (`make_consistent(text, findings, head observations, lung_wording=False)`; the default until
  2026-11-30 11:30 UTC);
* `+ lungs otherwise clear`: also rewords "the lungs are clear" beside a named lung finding
  (`make_consistent(text, findings, head observations, drop_fragments=False)`; the default until
  2026-11-30 22:00 UTC);
* `+ fragments dropped` (the default now): also drops sentence fragments first, sentences with no
  word of three letters or more besides "xxxx" and a last sentence with no closing period
  (`make_consistent(text, findings, head observations)`);
* `+ all-clear dropped beside a finding` and `+ all-clear reworded beside a finding`: also drop, or
  reword as "no other acute disease", a sentence clearing the whole study ("no acute disease")
  beside a named finding it contradicts (`make_consistent(..., all_clear="drop" | "reword")`).

Next to them, the `nearest-train` baseline. Each is scored by `radgen.metrics.evaluate` (findings
against the manifest's `labels.chexpert`, BLEU-4, METEOR 1.5 when Java is there, ROUGE-L, CIDEr-D),
and each rule is compared with the one before it (paired bootstrap, approximate-randomization p). The replay
leaves out the model's re-scoring of edited text, which changes token log-probabilities, not text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grounded import grounded_parser  # noqa: E402

KEYS = ["findings_abnormal_micro_f1", "findings_abnormal_macro_f1", "findings_support_devices_f1", "findings_pleural_effusion_f1",
        "bleu4", "meteor", "rouge_l", "cider_d"]


def main(argv: list[str] | None = None) -> dict:
    from radgen.data.study import read_manifest
    from radgen.generate.decode import generate_reports, load_model, seed_draft_table, select_studies
    from radgen.metrics.baselines import baseline_predictions
    from radgen.metrics.evaluate import evaluate
    from radgen.metrics.meteor import MeteorScorer, MeteorUnavailable
    from radgen.metrics.stats import paired_test
    from radgen.models.consistency import make_consistent
    from radgen.pipeline import resolve_model

    args = grounded_parser(__doc__, split="val").parse_args(argv)

    studies = read_manifest(args.data)
    chosen = select_studies(studies, args.split, args.limit)
    model = load_model(resolve_model(args.model))
    if getattr(model, "findings", None) is None:
        raise SystemExit(f"{args.model}: not a grounded model (no finding head); nothing to replay")
    seed_draft_table(model, resolve_model(args.model))
    raw = generate_reports(model, chosen, root=Path(args.data).parent, batch_size=args.batch_size, consistent_findings=False)
    observations = model.findings.observations

    def replay(rows: list[dict], head_list: list[str], lung_wording: bool = False, fragments: bool = False,
               all_clear: str = "keep") -> list[dict]:
        return [{**r, "findings": make_consistent(r["findings"], r["findings_predicted"], head_list, lung_wording, fragments,
                                                  all_clear=all_clear)[0]}
                for r in rows]

    ids = {s.study_id for s in chosen}
    systems = {"decoder text": raw, "named only": replay(raw, []), "named + unnamed": replay(raw, observations),
               "+ lungs otherwise clear": replay(raw, observations, lung_wording=True),
               "+ fragments dropped (default)": replay(raw, observations, lung_wording=True, fragments=True),
               "+ all-clear dropped beside a finding": replay(raw, observations, lung_wording=True, fragments=True, all_clear="drop"),
               "+ all-clear reworded beside a finding": replay(raw, observations, lung_wording=True, fragments=True, all_clear="reword"),
               "nearest-train": [r for r in baseline_predictions(studies, "nearest-train", test_split=args.split) if r["study_id"] in ids]}
    steps = [("named + unnamed", "named only"), ("+ lungs otherwise clear", "named + unnamed"),
             ("+ fragments dropped (default)", "+ lungs otherwise clear"),
             ("+ all-clear dropped beside a finding", "+ fragments dropped (default)"),
             ("+ all-clear reworded beside a finding", "+ fragments dropped (default)")]
    metrics = ["findings", "bleu", "meteor", "rouge_l", "cider_d"]
    try:
        scorer = MeteorScorer()
    except MeteorUnavailable as err:
        print(f"note: METEOR skipped ({err})", file=sys.stderr)
        scorer, metrics = None, [m for m in metrics if m != "meteor"]
    try:
        results = {name: evaluate(rows, chosen, metrics=metrics, bootstrap=args.bootstrap, return_statistics=True, meteor_scorer=scorer)
                   for name, rows in systems.items()}
        # paired METEOR re-scores resampled statistics through the same jar session
        paired = {rule: paired_test(results[before]["_statistics"], results[rule]["_statistics"]) for rule, before in steps}
    finally:
        if scorer is not None:
            scorer.close()
    out: dict = {"split": args.split, "studies": len(chosen), "model": args.model, "systems": {}, "changed_reports": {}}
    for name, result in results.items():
        texts = [r["findings"] for r in systems[name]]
        out["systems"][name] = {k: result["corpus"].get(k) for k in KEYS} | {
            "words_per_report": sum(len(t.split()) for t in texts) / max(len(texts), 1), "distinct_reports": len(set(texts)) / max(len(texts), 1)}
    out["changed_reports"] = {f"{rule} vs {before}": sum(a["findings"] != b["findings"] for a, b in zip(systems[before], systems[rule]))
                              for rule, before in steps}
    out["rule_minus_previous"] = {f"{rule} vs {before}": {k: {"delta": paired[rule][k].delta, "ci95": list(paired[rule][k].ci),
                                                               "p": paired[rule][k].p_value} for k in KEYS if k in paired[rule]}
                                  for rule, before in steps}
    print(f"{args.split}: {len(chosen)} studies; reports each rule changes: {out['changed_reports']}")
    print("| system | " + " | ".join(KEYS) + " | words | distinct |")
    for name, row in out["systems"].items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" if row.get(k) is not None else "–" for k in KEYS)
              + f" | {row['words_per_report']:.1f} | {row['distinct_reports']:.0%} |")
    for step, deltas in out["rule_minus_previous"].items():
        for key, value in deltas.items():
            print(f"{step}, {key}: {value['delta']:+.3f} [{value['ci95'][0]:+.3f}, {value['ci95'][1]:+.3f}] p={value['p']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
