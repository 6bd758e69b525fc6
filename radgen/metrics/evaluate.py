"""`radgen.metrics.evaluate`: score predicted reports against reference studies, one protocol per run.

Stable score keys (documented in docs/metrics.md):

* ``bleu1`` .. ``bleu4``, ``rouge_l``, ``cider_d`` -- pycocoevalcap-equal, on cleaned, whitespace-split text
* ``meteor`` -- METEOR 1.5 (Java jar); absent (with a protocol note) when Java is missing
* ``bertscore_p``, ``bertscore_r``, ``bertscore_f1``, ``embed_cos`` -- local encoder (protocol names it)
* ``ce_{r2gen|chexbert}_{micro|macro}_{p|r|f1}_{14|5}``, ``ce_{r2gen|chexbert}_example_{p|r|f1}_14`` --
  clinical efficacy with radgen's rule-based CheXpert labeler; the middle word is the convention
  (r2gen: uncertain -> 0, chexbert: uncertain -> 1)
* ``f1chexbert_{r2gen|chexbert}_...`` -- the same with labels from a user-supplied CheXbert checkpoint
* ``radgraph_simple``, ``radgraph_partial``, ``radgraph_complete`` -- RadGraph F1 (checkpoint run by the radgraph package, or annotations)
* ``findings_abnormal_{micro|macro}_{p|r|f1}``, ``findings_{observation}_{p|r|f1}`` -- the generated report's findings
  against the reference manifest's ground-truth ``labels.chexpert`` (radgen.metrics.findings); only when it has them

Every key gets a bootstrap 95% interval under ``ci95`` (studies resampled, corpus metric recomputed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radgen.data.study import Study, read_manifest
from radgen.data.text import clean_report
from radgen.errors import ConfigError, DataError
from radgen.io import read_jsonl
from radgen.labels.labeler import label_reports
from radgen.metrics import clinical, stats, text
from radgen.metrics.findings import finding_statistic
from radgen.metrics.meteor import METEOR_NAME, MeteorScorer, MeteorUnavailable

ALL_METRICS = ("bleu", "rouge_l", "cider_d", "meteor", "bertscore", "embed_cos", "ce", "findings", "chexbert", "radgraph")
DEFAULT_METRICS = ("bleu", "rouge_l", "cider_d", "meteor", "bertscore", "embed_cos", "ce", "findings")
SECTIONS = ("findings", "impression", "both")


def _prediction_text(row: dict, section: str) -> str:
    if section == "both":
        return " ".join(str(row.get(k) or "") for k in ("findings", "impression")).strip()
    return str(row.get(section) or "")


def load_predictions(preds: str | os.PathLike | Sequence[dict]) -> dict[str, dict]:
    rows = read_jsonl(preds) if isinstance(preds, (str, os.PathLike)) else list(preds)
    out: dict[str, dict] = {}
    for number, row in enumerate(rows, start=1):
        if "study_id" not in row:
            where = f"{preds}:{number}" if isinstance(preds, (str, os.PathLike)) else f"prediction {number}"
            raise DataError(f"{where}: prediction row has no 'study_id'; rows look like {{\"study_id\", \"findings\", \"impression\"}}")
        out[str(row["study_id"])] = row
    return out


def load_references(refs: str | os.PathLike | Sequence[Study]) -> list[Study]:
    return read_manifest(refs) if isinstance(refs, (str, os.PathLike)) else list(refs)


def align(preds: dict[str, dict], refs: list[Study], section: str, split: str | None, allow_missing: bool) -> tuple[list[str], list[str], list[str], dict]:
    """Pair predictions with references (reference order); report what was skipped."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r}; use one of {', '.join(SECTIONS)}")
    studies = [s for s in refs if split is None or s.split == split]
    if not studies:
        raise DataError(f"no reference studies{' in split ' + repr(split) if split else ''}; check --ref / --split")
    missing = [s.study_id for s in studies if s.study_id not in preds]
    if missing and not allow_missing:
        raise DataError(f"{len(missing)} of {len(studies)} reference studies have no prediction (first: {', '.join(missing[:5])}); predict them or pass --allow-missing")
    ids, hyps, ref_texts = [], [], []
    empty_refs = []
    for study in studies:
        if study.study_id not in preds:
            continue
        reference = study.report(section).strip()
        if not reference:
            empty_refs.append(study.study_id)
            continue
        ids.append(study.study_id)
        hyps.append(_prediction_text(preds[study.study_id], section))
        ref_texts.append(reference)
    if not ids:
        raise DataError(f"no study has both a prediction and a non-empty reference {section!r} section")
    skipped = {
        "missing_prediction": len(missing),
        "empty_reference": len(empty_refs),
        "extra_predictions": len(set(preds) - {s.study_id for s in studies}),
    }
    return ids, hyps, ref_texts, skipped


def evaluate(
    preds: str | os.PathLike | Sequence[dict],
    refs: str | os.PathLike | Sequence[Study],
    section: str = "findings",
    metrics: Sequence[str] | None = None,
    cleaning: str = "r2gen-iu",
    split: str | None = None,
    allow_missing: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    bertscore_model: str | os.PathLike | None = None,
    bertscore_layer: int | None = None,
    bertscore_idf: bool = False,
    bertscore_baseline: tuple[float, float, float] | None = None,
    chexbert_weights: str | os.PathLike | None = None,
    chexbert_tokenizer: str | os.PathLike | None = None,
    radgraph_weights: str | os.PathLike | None = None,
    radgraph_annotations: str | os.PathLike | None = None,
    radgraph_python: str | None = None,
    return_statistics: bool = False,
    meteor_scorer: MeteorScorer | None = None,
    semantic_dtype: str = "float32",
) -> dict[str, Any]:
    """Score predictions (JSONL path or rows) against references (manifest path or Study list).

    Returns {"n_studies", "section", "corpus", "ci95", "per_study", "protocol", "skipped", "timings"}.
    """
    metrics = tuple(metrics or DEFAULT_METRICS)
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; choose from {', '.join(ALL_METRICS)}")
    references = load_references(refs)
    ids, hyps_raw, refs_raw, skipped = align(load_predictions(preds), references, section, split, allow_missing)
    # An empty prediction stays empty: R2Gen's cleaner would turn it into " ." and give it credit.
    hyps = [clean_report(h, cleaning) if h.strip() else "" for h in hyps_raw]
    ref_clean = [clean_report(r, cleaning) for r in refs_raw]
    corpus: dict[str, float] = {}
    per_study: dict[str, np.ndarray] = {}
    statistics: list[stats.Statistic] = []
    timings: dict[str, float] = {}
    protocol: dict[str, Any] = {
        "section": section,
        "split": split,
        "cleaning": cleaning,
        "tokenizer": "whitespace split of the cleaned text (no PTB tokenizer), as R2Gen feeds pycocoevalcap",
        "n_gram_metrics": "BLEU-1..4 (corpus, 'closest' ref length), ROUGE-L (beta 1.2), CIDEr-D (sigma 6, df over this test set's references); equal to pycocoevalcap 1.2",
        "bootstrap": {"resamples": bootstrap, "seed": seed, "interval": "percentile 95%", "unit": "study"},
        "notes": [],
    }
    meteor_job = _MeteorJob(hyps, ref_clean, meteor_scorer) if "meteor" in metrics else None
    try:
        ngram = [m for m in metrics if m in ("bleu", "rouge_l", "cider_d")]
        if ngram:
            start = time.perf_counter()
            scores = text.text_metrics(hyps, ref_clean, tuple(ngram))
            corpus.update(scores.corpus)
            per_study.update(scores.per_study)
            if "bleu" in metrics:
                bs = scores.bleu_stats
                matrix = np.concatenate([bs.correct, bs.guess, bs.testlen[:, None], bs.reflen[:, None]], axis=1).astype(np.float64)

                def reduce_bleu(s: np.ndarray) -> dict[str, np.ndarray]:
                    values = text.bleu_from_totals(s[:, 0:4], s[:, 4:8], s[:, 8], s[:, 9])
                    return {f"bleu{k + 1}": values[:, k] for k in range(4)}

                statistics.append(stats.Statistic(matrix, reduce_bleu))
            for key in ("rouge_l", "cider_d"):
                if key in scores.per_study:
                    statistics.append(stats.mean_statistic(key, scores.per_study[key]))
            timings["bleu_rouge_cider"] = time.perf_counter() - start
        if "ce" in metrics:
            start = time.perf_counter()
            pred_labels, ref_labels = label_reports(hyps_raw), label_reports(refs_raw)
            ce_corpus, ce_study = clinical.ce_scores(pred_labels, ref_labels, prefix="ce")
            corpus.update(ce_corpus)
            statistics.extend(_ce_statistics(ce_study, "ce"))
            per_study.update({k: v for k, v in ce_study.items() if not k.startswith("_")})
            per_study["_labels_pred"] = pred_labels  # type: ignore[assignment]
            per_study["_labels_ref"] = ref_labels  # type: ignore[assignment]
            protocol["ce_labeler"] = "radgen rule-based CheXpert labeler (radgen.labels.labeler), on uncleaned text"
            protocol["ce_conventions"] = {"r2gen": "positive=1; uncertain, negative, blank=0", "chexbert": "positive and uncertain=1"}
            protocol["ce_averaging"] = "micro and macro over 14 and over 5 (Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion); example-based over 14 (empty-vs-empty scores 0)"
            timings["ce"] = time.perf_counter() - start
        if "findings" in metrics:
            by_id = {s.study_id: s for s in references}
            truth = [by_id[i].labels.get("chexpert") for i in ids]
            if all(label is None for label in truth):
                protocol["notes"].append("findings vs image truth not computed: the reference manifest has no labels.chexpert")
            else:
                if any(label is None for label in truth):
                    raise DataError(f"{sum(label is None for label in truth)} of {len(ids)} reference studies have no labels.chexpert "
                                    "while others do; label all of them or drop 'findings' from --metrics")
                pred_labels = per_study.get("_labels_pred") or label_reports(hyps_raw)  # type: ignore[assignment]
                statistic, finding_protocol = finding_statistic(pred_labels, truth)  # type: ignore[arg-type]
                corpus.update(statistic.corpus())
                statistics.append(statistic)
                protocol.update(finding_protocol)
        if "bertscore" in metrics or "embed_cos" in metrics:
            from radgen.metrics.semantic import Encoder, semantic_scores

            start = time.perf_counter()
            # the labeler and n-gram metrics above are single-threaded Python; the encoder uses every
            # core, so it gives the METEOR JVM's core back while that still runs (spinning OpenMP
            # threads on a shared core cost more than they add)
            busy = meteor_job.running if meteor_job is not None else None
            sem = semantic_scores(hyps_raw, refs_raw, Encoder.load(bertscore_model), bertscore_layer, bertscore_idf, bertscore_baseline,
                                  dtype=semantic_dtype, core_busy=busy)
            if "bertscore" in metrics:
                for j, name in enumerate(("bertscore_p", "bertscore_r", "bertscore_f1")):
                    corpus[name] = float(sem.bertscore[:, j].mean())
                    per_study[name] = sem.bertscore[:, j]
                    statistics.append(stats.mean_statistic(name, sem.bertscore[:, j]))
            if "embed_cos" in metrics:
                corpus["embed_cos"] = float(sem.embed_cos.mean())
                per_study["embed_cos"] = sem.embed_cos
                statistics.append(stats.mean_statistic("embed_cos", sem.embed_cos))
            protocol.update(sem.protocol)
            protocol["semantic_input"] = "uncleaned report text"
            timings["semantic"] = time.perf_counter() - start
        if "chexbert" in metrics:
            from radgen.metrics.chexbert import CheXbertLabeler

            start = time.perf_counter()
            labeler = CheXbertLabeler.load(chexbert_weights, tokenizer=chexbert_tokenizer)
            pred_labels, ref_labels = labeler.label(hyps_raw), labeler.label(refs_raw)
            cx_corpus, cx_study = clinical.ce_scores(pred_labels, ref_labels, prefix="f1chexbert")
            corpus.update(cx_corpus)
            statistics.extend(_ce_statistics(cx_study, "f1chexbert"))
            per_study.update({k: v for k, v in cx_study.items() if not k.startswith("_")})
            protocol["f1chexbert_labeler"] = f"CheXbert checkpoint {labeler.path}"
            timings["chexbert"] = time.perf_counter() - start
        if "radgraph" in metrics:
            from radgen.metrics.radgraph import radgraph_scores

            rg = radgraph_scores(ids, hyps_raw, refs_raw, weights=radgraph_weights, annotations=radgraph_annotations,
                                 python=radgraph_python)
            for name, values in rg.items():
                corpus[name] = float(values.mean())
                per_study[name] = values
                statistics.append(stats.mean_statistic(name, values))
            source = radgraph_annotations or f"checkpoint {radgraph_weights} run by the radgraph package ({radgraph_python or 'this python'})"
            protocol["radgraph"] = f"RadGraph F1 (simple/partial/complete rewards, radgraph package conventions) from {source}"
        if meteor_job is not None:
            try:
                result_meteor, session, seconds = meteor_job.result()
                corpus["meteor"] = result_meteor.corpus
                per_study["meteor"] = result_meteor.per_study
                statistics.append(stats.Statistic(result_meteor.stats, lambda s: {"meteor": session.corpus_from_summed(s)}))
                protocol["meteor"] = METEOR_NAME
                timings["meteor (in parallel)"] = seconds
            except MeteorUnavailable as err:
                protocol["meteor"] = f"skipped: {err}"
                protocol["notes"].append("METEOR not computed (no Java); NLTK's METEOR is a different metric and is never substituted")
        start = time.perf_counter()
        ci = stats.bootstrap(statistics, bootstrap, seed)
        timings["bootstrap"] = time.perf_counter() - start
    finally:
        if meteor_job is not None:
            meteor_job.close()
    corpus = {k: corpus[k] for k in sorted(corpus, key=lambda k: (_KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER)))}
    rows = []
    pred_labels = per_study.pop("_labels_pred", None)
    ref_labels = per_study.pop("_labels_ref", None)
    for i, study_id in enumerate(ids):
        row: dict[str, Any] = {"study_id": study_id}
        for key, values in per_study.items():
            if not key.startswith("_"):
                row[key] = float(values[i])
        if pred_labels is not None:
            row["labels_pred"] = pred_labels[i]  # type: ignore[index]
            row["labels_ref"] = ref_labels[i]  # type: ignore[index]
        rows.append(row)
    result = {
        "n_studies": len(ids),
        "section": section,
        "corpus": corpus,
        "ci95": {k: list(v) for k, v in ci.items()},
        "per_study": rows,
        "protocol": protocol,
        "skipped": skipped,
        "timings": timings,
    }
    if return_statistics:
        result["_statistics"] = statistics
    return result


_KEY_ORDER = ["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider_d"]


class _MeteorJob:
    """Run METEOR 1.5 in a background thread: the JVM works on its own while Python scores the rest."""

    def __init__(self, hyps: list[str], refs: list[str], scorer: MeteorScorer | None):
        self._own = scorer is None
        self._scorer = scorer
        self._out: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(hyps, refs), daemon=True)
        self._thread.start()

    def _run(self, hyps: list[str], refs: list[str]) -> None:
        start = time.perf_counter()
        try:
            if self._scorer is None:
                self._scorer = MeteorScorer()
            self._out = (self._scorer.score(hyps, refs), self._scorer, time.perf_counter() - start)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = err

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> tuple[Any, MeteorScorer, float]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out

    def close(self) -> None:
        self._thread.join()
        if self._own and self._scorer is not None:
            self._scorer.close()


def _ce_statistics(per_study: dict, prefix: str) -> list[stats.Statistic]:
    out = []
    for convention in clinical.CONVENTIONS:
        counts = per_study[f"_{prefix}_{convention}_counts"].reshape(len(per_study[f"_{prefix}_{convention}_counts"]), -1).astype(np.float64)
        examples = per_study[f"_{prefix}_{convention}_examples"]
        matrix = np.concatenate([counts, examples], axis=1)

        def reduce(s: np.ndarray, convention: str = convention) -> dict[str, np.ndarray]:
            values = clinical.ce_from_counts(s[:, :42].reshape(-1, 3, 14), s[:, 42:])
            return {f"{prefix}_{convention}_{k}": v for k, v in values.items()}

        out.append(stats.Statistic(matrix, reduce))
    return out


def format_table(result: dict[str, Any], title: str | None = None) -> str:
    """Markdown table: metric, score, 95% CI."""
    lines = [f"### {title}" if title else f"### Scores ({result['n_studies']} studies, section {result['section']})", "", "| metric | score | 95% CI |", "|---|---:|---|"]
    for key, value in result["corpus"].items():
        ci = result["ci95"].get(key)
        lines.append(f"| {key} | {value:.4f} | {f'{ci[0]:.4f} – {ci[1]:.4f}' if ci else ''} |")
    return "\n".join(lines) + "\n"


def plot_scores(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Bar chart of the main corpus scores with 95% CI whiskers (matplotlib Agg), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radgen.io import atomic_write_bytes

    keys = [k for k in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider_d", "bertscore_f1", "embed_cos", "ce_r2gen_micro_f1_14", "ce_chexbert_micro_f1_14", "ce_r2gen_micro_f1_5") if k in result["corpus"]]
    values = [result["corpus"][k] for k in keys]
    errors = np.array([[v - result["ci95"].get(k, [v, v])[0], result["ci95"].get(k, [v, v])[1] - v] for k, v in zip(keys, values)]).T
    fig, ax = plt.subplots(figsize=(max(6, len(keys) * 0.8), 4))
    ax.bar(range(len(keys)), values, yerr=errors if len(keys) else None, capsize=3, color="#4C72B0")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=45, ha="right")
    ax.set_ylabel("score")
    ax.set_title(f"radgen evaluate: {result['n_studies']} studies, {result['section']}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write_outputs(result: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """scores.json (+ .md table and .png plot next to it); all atomic."""
    from radgen.io import atomic_write_json, atomic_write_text

    out = Path(out)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    table = format_table(result)
    public["table_markdown"] = table
    atomic_write_json(out, public)
    md, png = out.with_suffix(".md"), out.with_suffix(".png")
    atomic_write_text(md, table)
    plot_scores(result, png)
    return [out, md, png]
