"""`radgen demo`: render IU-Phantom studies, draft their reports, score them, write one HTML page.

    radgen demo [--out out/demo] [--model NAME|DIR|RUN] [--studies N] [--size 384] [--metrics bleu,rouge_l,cider_d,meteor,ce]

The studies are the label sets in radgen/assets/demo_studies.jsonl (MeSH terms + a reference
Findings/Impression that the radgen developers wrote from those labels — no IU X-Ray report text is
shipped). Each is rendered by the IU-Phantom renderer (synthetic PA + lateral radiographs), the model
(the shipped radgen-small, or --model: a name, a model folder or a run folder) drafts a report with sentence
confidences (radgen.generate), an attention overlay is drawn (radgen.explain), the drafts are scored
with radgen.metrics.evaluate, and everything lands in OUT/: report.html, predictions.jsonl,
manifest.jsonl, metrics.json, images/. OUT is replaced as a whole, atomically (radgen.io.atomic_dir).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

from radgen.errors import RadgenError

DEMO_STUDIES = Path(__file__).resolve().parent / "assets" / "demo_studies.jsonl"
DEMO_MARKER = ".radgen-demo"  # lets a re-run replace its own previous output, and nothing else
DEFAULT_METRICS = ("bleu", "rouge_l", "cider_d", "meteor", "ce")
LOW_CONFIDENCE = 0.5
REFERENCE_NOTE = ("Reference texts were written by the radgen developers from each study's MeSH labels; "
                  "they are not IU X-Ray reports. Images are synthetic (IU-Phantom renderer).")


def demo_studies(limit: int | None = None) -> list:
    """The embedded label sets as Study records (split "test", source "radgen-demo")."""
    from radgen.data.study import Study
    from radgen.io import read_jsonl

    studies = []
    for row in read_jsonl(DEMO_STUDIES)[:limit]:
        studies.append(Study(study_id=row["id"], sections={"findings": row["findings"], "impression": row["impression"]},
                             labels={"mesh": list(row["mesh"])}, split="test", source="radgen-demo",
                             meta={"reference_source": row["reference_source"]}))
    return studies


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / DEMO_MARKER).exists())):
        raise RadgenError(f"{out}: exists and is not an earlier `radgen demo` output; pass --out with a new or empty folder "
                          "(the demo replaces its output folder as a whole)")


def run_demo(out: str | Path = "out/demo", model_dir: str | Path | None = None, studies: int = 8, size: int = 384,
             metrics: tuple[str, ...] = DEFAULT_METRICS, heatmaps: bool = True, progress: bool = True) -> Path:
    """Run the demo; returns the path of report.html. model_dir: a shipped name, model folder or run folder (None: radgen-small)."""
    from radgen.data.images import load_image
    from radgen.data.phantom import render_study
    from radgen.data.study import write_manifest
    from radgen.generate.decode import generate_reports, load_model
    from radgen.io import atomic_dir, atomic_write_json, atomic_write_text, write_jsonl
    from radgen.metrics.evaluate import ALL_METRICS, evaluate
    from radgen.pipeline import resolve_model
    from radgen.serve.inference import attention_overlays, model_card

    out = Path(out)
    if studies < 1:
        raise RadgenError(f"--studies must be at least 1, got {studies}")
    if size < 64:
        raise RadgenError(f"--size must be at least 64 (phantom renderer), got {size}")
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:  # checked before the slow part, not after rendering and decoding
        raise RadgenError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(ALL_METRICS)}")
    _check_out_dir(out)
    model_dir = resolve_model(model_dir)
    model = load_model(model_dir)
    card = model_card(model, model_dir)
    section = model.recipe.data.section if model.recipe.data.section in ("findings", "impression") else "findings"
    chosen = demo_studies(studies)
    with atomic_dir(out) as tmp:
        (tmp / DEMO_MARKER).write_text("written by radgen demo\n")
        rendered = [render_study(study, tmp, seed=0, size=size) for study in chosen]
        preds = generate_reports(model, rendered, root=tmp, section=section, progress=progress)
        overlays: dict[str, str] = {}
        if heatmaps:
            for study, row in zip(rendered, preds):
                frontal = study.images[0]  # PA: what the model read ("first_frontal")
                image = load_image(tmp / frontal.path, colour=model.recipe.data.colour)  # as generate decoded it
                pixels = model.image_transform(image)[None]
                maps = attention_overlays(model, image, pixels, _token_ids(model, row),
                                          [tuple(s["token_span"]) for s in row["sentences"]], per_sentence=False)
                relative = f"images/{Path(frontal.path).stem}_attention.png"
                (tmp / relative).write_bytes(maps.report)
                overlays[study.study_id] = relative
        scores = evaluate(preds, rendered, section=section, metrics=metrics, bootstrap=200)
        write_manifest(tmp / "manifest.jsonl", rendered)
        write_jsonl(tmp / "predictions.jsonl", preds)
        atomic_write_json(tmp / "metrics.json", {k: scores[k] for k in ("n_studies", "section", "corpus", "ci95", "protocol", "skipped")})
        atomic_write_text(tmp / "report.html", render_html(rendered, preds, scores, card, overlays, section))
    return out / "report.html"


def _token_ids(model: Any, row: dict) -> list[int]:
    """The generated token ids: prediction rows keep tokens (strings); map them back exactly."""
    return model.tokenizer.convert_tokens_to_ids(row["tokens"])


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#1d232a}
h1{margin:0 0 4px}.banner{padding:6px 10px;background:#fdecea;border:1px solid #f5c2bd;border-radius:4px;font-size:13px}
.note{color:#5b6670;font-size:13px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d5dbe0;padding:3px 8px;text-align:left}
.study{border:1px solid #d5dbe0;border-radius:6px;padding:12px;margin:14px 0;display:grid;grid-template-columns:260px 1fr;gap:14px}
.study img{width:250px;border-radius:4px;display:block;margin-bottom:6px}.low{background:#ffe08a}.sentence{padding:1px 2px;border-radius:3px}
h3{margin:0 0 6px;font-size:15px}.label{color:#5b6670;font-size:13px;margin:6px 0 2px}
"""


def _sentences_html(row: dict, section: str) -> str:
    if not row.get(section):
        return "<em>(empty)</em>"
    parts = []
    for sentence in row["sentences"]:
        confidence = sentence["confidence"] if sentence["confidence"] is not None else 0.0
        css = "sentence low" if confidence < LOW_CONFIDENCE else "sentence"
        parts.append(f'<span class="{css}" title="confidence {confidence:.2f}">{html.escape(sentence["text"])}</span>')
    return " ".join(parts)


def render_html(studies: list, preds: list[dict], scores: dict, card: dict, overlays: dict[str, str], section: str) -> str:
    """The self-contained demo page (relative image links only; nothing from the network)."""
    by_id = {row["study_id"]: row for row in preds}
    per_study = {row["study_id"]: row for row in scores["per_study"]}
    metric_rows = []
    for key, value in scores["corpus"].items():
        if key.startswith("ce_") and not key.endswith(("_f1_14", "_f1_5")):
            continue  # keep the table short: the F1s; metrics.json has every key
        low, high = scores["ci95"].get(key, (None, None))
        interval = f"{low:.3f} – {high:.3f}" if low is not None else ""
        metric_rows.append(f"<tr><td>{html.escape(key)}</td><td>{value:.4f}</td><td>{interval}</td></tr>")
    protocol = scores["protocol"]
    protocol_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                            for k, v in protocol.items() if k not in ("bootstrap",))
    card_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                        for k, v in card.items() if v not in (None, ""))
    blocks = []
    for study in studies:
        row = by_id[study.study_id]
        scores_row = per_study.get(study.study_id, {})
        views = "".join(f'<img src="{html.escape(ref.path)}" alt="{html.escape(ref.view)} view">' for ref in study.images[:1])
        if study.study_id in overlays:
            views += f'<img src="{html.escape(overlays[study.study_id])}" alt="attention overlay">'
        study_scores = ", ".join(f"{k} {scores_row[k]:.3f}" for k in ("bleu4", "rouge_l", "cider_d", "meteor") if k in scores_row)
        blocks.append(f"""<div class="study" id="{html.escape(study.study_id)}">
<div>{views}<div class="note">PA view{" and attention overlay" if study.study_id in overlays else ""}</div></div>
<div><h3>{html.escape(study.study_id)}</h3>
<div class="label">Labels (MeSH)</div><div>{html.escape("; ".join(study.labels.get("mesh", [])))}</div>
<div class="label">Generated {section}</div><div class="generated">{_sentences_html(row, section)}</div>
<div class="label">Reference {section}</div><div class="reference">{html.escape(study.report(section))}</div>
<div class="label">Reference impression</div><div>{html.escape(study.report("impression")) if section != "impression" else ""}</div>
<div class="label">Scores</div><div class="note">{html.escape(study_scores)}; report confidence {(row["confidence"] or 0):.2f}</div>
</div></div>""")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>radgen demo</title><style>{_CSS}</style></head><body>
<h1>radgen demo</h1>
<p class="banner">{html.escape(card["disclaimer"])}</p>
<p class="note">{html.escape(REFERENCE_NOTE)} Sentences with confidence below {LOW_CONFIDENCE} (mean token probability) are
<span class="low">highlighted</span>; hover a sentence for its value.</p>
<h2>Metrics ({scores["n_studies"]} studies, section: {html.escape(section)})</h2>
<table id="metrics"><tr><th>metric</th><th>value</th><th>bootstrap 95% interval</th></tr>{"".join(metric_rows)}</table>
<p class="note">A handful of studies: the numbers show that the pipeline runs end to end, not how good the model is.
Every key is in metrics.json.</p>
<details><summary>Protocol</summary><table>{protocol_rows}</table></details>
<h2>Model card</h2><table id="card">{card_rows}</table>
<h2>Studies</h2>
{"".join(blocks)}
</body></html>
"""


# ---------------------------------------------------------------------------------------- CLI
def _demo(args: argparse.Namespace) -> int:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    path = run_demo(args.out, args.model, studies=args.studies, size=args.size, metrics=metrics, heatmaps=not args.no_heatmaps)
    print(f"radgen: demo written to {path}", file=sys.stderr)
    print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="render phantom studies, draft and score their reports, write report.html",
                                 description="Render IU-Phantom studies from the embedded label sets, generate reports, "
                                             "evaluate them and write OUT/report.html.")
    demo.add_argument("--out", default="out/demo", help="output folder, replaced as a whole (default out/demo)")
    demo.add_argument("--model", default=None, metavar="NAME|DIR|RUN",
                      help="a shipped model name (radgen-small, the default), a save_pretrained folder or a training run "
                           "folder (uses RUN/best)")
    demo.add_argument("--studies", type=int, default=8, help="how many of the 8 embedded studies to run")
    demo.add_argument("--size", type=int, default=384, help="rendered image size in pixels")
    demo.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated radgen.metrics.evaluate metrics")
    demo.add_argument("--no-heatmaps", action="store_true", help="skip the attention overlays")
    demo.set_defaults(func=_demo)
