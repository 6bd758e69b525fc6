"""`radgen generate FOLDER` on a folder of PA and lateral files: do the findings match what a manifest gets?

    PYTHONPATH=. python benchmarks/folder_input.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --split test --json folder_input.json

The `--split` studies' image files are linked into one flat folder under their own names (IU-Phantom's
`iu-3321_PA.png`, `iu-3321_LATERAL.png`), as a user's export would be, and read the way `radgen
generate FOLDER` reads it (`radgen.generate.inputs.collect_inputs`), side by side in one run:

* `manifest`: the studies as the manifest gives them (views known; the finding head reads both);
* `folder`: the folder, a frontal and a lateral of one study paired into one study (the default);
* `folder, one study per image`: `--one-study-per-image`; each frontal file's report is scored.

Each system's reports are scored against the manifest's image truth (`labels.chexpert`) by
`radgen.metrics.evaluate` (finding micro-F1 with its bootstrap CI, BLEU-4), and every folder study is
matched to its manifest study by its frontal file. The JSON also keeps each study's finding
probabilities per system.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from radgen.machine import cpu_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grounded import grounded_parser  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from dataclasses import replace

    from radgen.data.study import read_manifest
    from radgen.generate.decode import generate_reports, load_model, seed_draft_table, select_studies
    from radgen.generate.inputs import collect_inputs
    from radgen.metrics.evaluate import evaluate
    from radgen.pipeline import resolve_model

    args = grounded_parser(__doc__.split("\n\n")[0], split="test").parse_args(argv)
    studies = select_studies(read_manifest(args.data), args.split, args.limit)
    root = Path(args.data).resolve().parent
    model = load_model(resolve_model(args.model))
    out: dict = {"split": args.split, "studies": len(studies), "model": args.model, "machine": {"cpu": cpu_summary()}, "systems": {}}
    with tempfile.TemporaryDirectory() as folder:
        owner = {}  # file name in the folder → (manifest study, is it the study's frontal file)
        for study in studies:
            frontal = next((ref for ref in study.images if ref.is_frontal), study.images[0])
            for ref in study.images:
                link = Path(folder) / Path(ref.path).name
                link.symlink_to(root / ref.path)
                owner[link.name] = (study, ref is frontal)
        systems = {"manifest": (studies, root)}
        for name, pair in (("folder", True), ("folder, one study per image", False)):
            found = collect_inputs(folder, pair_views=pair)
            kept = [s for s in found.studies if owner[Path(s.images[0].path).name][1]]  # the frontal file's study
            systems[name] = ([replace(s, study_id=owner[Path(s.images[0].path).name][0].study_id) for s in kept], Path(folder))
            out.setdefault("folder_studies", {})[name] = {"studies": len(found.studies), "paired": found.paired}
        for name, (decoded, image_root) in systems.items():
            model.report_draft.clear()
            seed_draft_table(model, resolve_model(args.model))
            started = time.perf_counter()
            rows = generate_reports(model, decoded, root=image_root, batch_size=args.batch_size, progress=False)
            seconds = time.perf_counter() - started
            result = evaluate(rows, studies, metrics=["findings", "bleu"], bootstrap=args.bootstrap)
            key = "findings_abnormal_micro_f1"
            out["systems"][name] = {"studies_scored": result["n_studies"], key: result["corpus"][key], "ci95": result["ci95"][key],
                                    "bleu4": result["corpus"]["bleu4"], "seconds": round(seconds, 1),
                                    "finding_probs": {r["study_id"]: r.get("finding_probs") for r in rows}}
    for name, row in out["systems"].items():
        print(f"| {name} | {row['findings_abnormal_micro_f1']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] | "
              f"{row['bleu4']:.3f} | {row['studies_scored']} |")
    print(json.dumps(out["folder_studies"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
