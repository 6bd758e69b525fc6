"""`explain_studies`: generate (or read) reports, explain each sentence, write PNGs and JSON.

Output folder layout::

    OUT/explanations.jsonl            one row per study: report, method, sentences (text, confidence, peak, png)
    OUT/<study>/sentence_00.png       heatmap of sentence 0 over the radiograph the model saw (its size)
    OUT/<study>/words/word_000.png    with per_word=True: one per word (attention methods only)
    OUT/attention_share.json/.png     seed 003 analysis: share of attention mass on the visual tokens per layer
    OUT/grounding.json                with grounding=True (IU-Phantom): pointing game, hallucination, laterality
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radgen.data.dataset import lateral_inputs
from radgen.data.images import load_image, stitch_images
from radgen.data.study import Study
from radgen.explain import attention, grounding
from radgen.generate.confidence import geometric_mean_probability, sentence_spans
from radgen.generate.decode import GenerationSettings, generation_dataset, study_batches
from radgen.io import atomic_write_bytes, atomic_write_json, write_jsonl


def safe_name(study_id: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", study_id)[:80]
    return clean if clean == study_id else f"{clean}-{hashlib.sha1(study_id.encode()).hexdigest()[:8]}"


def source_image(study: Study, root: str | os.PathLike | None, data: Any) -> tuple[Any, str | None]:
    """The (untransformed) image the model sees for this study, as StudyDataset selects it, and
    its ImageRef.path when it is a single image (None when stitched)."""
    refs = [ref for ref in study.images if not data.views or ref.view in data.views]
    root = Path(root) if root is not None else Path(".")

    def path(ref):
        return Path(ref.path) if os.path.isabs(ref.path) else root / ref.path

    colour = data.colour  # overlays are drawn on the pixels the model read, colour included
    if data.images == "stitch" and len(refs) > 1:
        return stitch_images([load_image(path(r), colour=colour) for r in refs[: data.max_images]], data.max_images), None
    frontal = [ref for ref in refs if ref.is_frontal]
    ref = (frontal or refs)[0]
    return load_image(path(ref), colour=colour), ref.path


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _words(tokenizer: Any, ids: list[int]) -> list[tuple[str, int, int]]:
    """(word, first token, end token) — tokens glued into whitespace-separated words."""
    words: list[tuple[str, int, int]] = []
    for i in range(len(ids)):
        piece = tokenizer.decode(ids[i: i + 1], skip_special_tokens=True)
        if words and piece and not piece[0].isspace():
            word, start, _ = words[-1]
            words[-1] = (word + piece, start, i + 1)
        elif piece.strip():
            words.append((piece.strip(), i, i + 1))
        elif words:
            word, start, _ = words[-1]
            words[-1] = (word, start, i + 1)
    return words


def share_plot(shares: list[float], path: Path, without_first: list[float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, len(shares) * 0.35 + 2), 3.2), dpi=100)
    layers = np.arange(len(shares))
    width = 0.4 if without_first is not None else 0.8
    ax.bar(layers - (width / 2 if without_first is not None else 0), shares, width=width, color="#4c72b0", label="all visual tokens")
    if without_first is not None:
        ax.bar(layers + width / 2, without_first, width=width, color="#dd8452", label="without position 0 (attention sink)")
        ax.legend(fontsize=7, loc="upper right")
    ax.set(xlabel="decoder layer", ylabel="attention share on visual tokens", ylim=(0, 1),
           title="Attention of generated tokens on the visual prompt")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _token_ids(model: Any, row: dict[str, Any], section: str) -> list[int]:
    tokens = row.get("tokens")
    if tokens:
        ids = model.tokenizer.convert_tokens_to_ids(tokens)
        if None not in ids and model.tokenizer.unk_token_id not in ids:
            return list(ids)
    return model.tokenizer(" " + row.get(section, "").strip() if model.recipe.model.decoder.prompt else row.get(section, "").strip(),
                           add_special_tokens=False)["input_ids"]


def explain_studies(model: Any, studies: Sequence[Study], out_dir: str | os.PathLike, root: str | os.PathLike | None = None,
                    section: str = "findings", predictions: dict[str, dict[str, Any]] | None = None, with_grounding: bool = False,
                    per_word: bool = False, force_gradient: bool = False, tolerance: int = 0, progress: bool = True,
                    **settings: Any) -> dict[str, Any]:
    """Explain one report per study (from `predictions` when given, else generated now); see module docstring."""
    if with_grounding:
        missing = [s.study_id for s in studies if "phantom" not in s.meta]
        if missing:
            from radgen.errors import DataError

            raise DataError(f"--grounding needs IU-Phantom studies (meta['phantom'] with finding boxes); {len(missing)} lack it "
                            f"(e.g. {', '.join(missing[:3])}); render them with `radgen data phantom` or drop --grounding")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = GenerationSettings.from_recipe(model.recipe, **settings)
    data = model.recipe.data
    dataset = generation_dataset(model, studies, root, section)
    by_id = {s.study_id: s for s in studies}
    rows, all_shares, all_after_first, per_study_grounding, methods = [], [], [], [], set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), unit="study", desc="explain")
    model.eval()
    for batch in study_batches(dataset, options.batch_size):
        ids_list, logprobs_list = [], []
        if predictions is not None:
            for sid in batch["study_ids"]:
                row = predictions.get(sid)
                if row is None:
                    from radgen.errors import DataError

                    raise DataError(f"study {sid} has no row in the predictions file; generate it first or drop --pred")
                ids_list.append(_token_ids(model, row, section))
                logprobs_list.append(row.get("token_logprobs") if len(row.get("token_logprobs") or []) == len(ids_list[-1]) else None)
        else:
            reports = model.generate(pixel_values=batch["pixel_values"], contexts=batch.get("contexts"), **lateral_inputs(batch),
                                     **options.generate_kwargs())
            ids_list = [r.token_ids for r in reports]
            logprobs_list = [r.token_logprobs for r in reports]
        spans = [[(s.start, s.end) for s in sentence_spans(model.tokenizer, ids)] for ids in ids_list]
        keep = [i for i, ids in enumerate(ids_list) if ids]
        explanations = dict(zip(keep, attention.explain(model, batch["pixel_values"][keep], [ids_list[i] for i in keep],
                                                        [spans[i] for i in keep], force_gradient=force_gradient))) if keep else {}
        for i, sid in enumerate(batch["study_ids"]):
            study = by_id[sid]
            ids = ids_list[i]
            text = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
            folder = out / safe_name(sid)
            image, image_path = source_image(study, root, data)
            resize = getattr(model.image_transform, "resize", "squash")
            sentences = []
            found = sentence_spans(model.tokenizer, ids)
            exp = explanations.get(i)
            for k, span in enumerate(found):
                entry: dict[str, Any] = {"text": span.text, "token_span": [span.start, span.end], "confidence": None, "peak": None}
                if logprobs_list[i] is not None:
                    entry["confidence"] = geometric_mean_probability(logprobs_list[i][span.start: span.end])
                if exp is not None:
                    heat = attention.upsample(exp.sentence_maps[k], image.size, resize)
                    entry["peak"] = list(attention.peak(heat))
                    entry["png"] = f"{folder.name}/sentence_{k:02d}.png"
                    entry["map"] = np.round(exp.sentence_maps[k], 6).tolist()
                    atomic_write_bytes(out / entry["png"], _png(attention.overlay(image, heat)))
                sentences.append(entry)
            words = []
            if per_word and exp is not None and exp.token_maps is not None:
                for w, (word, start, end) in enumerate(_words(model.tokenizer, ids)):
                    heat = attention.upsample(exp.token_maps[start:end].mean(0), image.size, resize)
                    name = f"{folder.name}/words/word_{w:03d}.png"
                    atomic_write_bytes(out / name, _png(attention.overlay(image, heat)))
                    words.append({"word": word, "token_span": [start, end], "png": name})
            if exp is not None:
                methods.add(exp.method)
                if exp.visual_share is not None:
                    all_shares.append(exp.visual_share)
                    all_after_first.append(exp.visual_share_after_first)
            row = {"study_id": sid, section: text, "method": exp.method if exp else None, "notes": exp.notes if exp else [],
                   "grid": list(exp.grid) if exp else None, "image": image_path, "image_size": list(image.size),
                   "confidence": geometric_mean_probability(logprobs_list[i]) if logprobs_list[i] else None,
                   "sentences": sentences, "visual_share_per_layer": exp.visual_share if exp else None}
            if words:
                row["words"] = words
            rows.append(row)
            if with_grounding:
                per_study_grounding.append(grounding.study_grounding(study, text, sentences, image_path, tolerance))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    write_jsonl(out / "explanations.jsonl", rows)
    summary: dict[str, Any] = {"studies": len(rows), "methods": sorted(methods)}
    if all_shares:
        mean = np.asarray(all_shares, dtype=np.float64).mean(0).tolist()
        atomic_write_json(out / "attention_share.json", {
            "definition": "per decoder layer: attention mass (mean over heads) that each generated token's query puts on the "
                          "visual tokens, averaged over tokens and then studies",
            "layers": mean, "studies": len(all_shares),
            "layers_without_first_position": np.asarray(all_after_first, dtype=np.float64).mean(0).tolist(),
            "note": "position 0 is the first visual token; LLMs put much attention on the first position whatever it is "
                    "(attention sink), so compare both rows",
            "per_study": {r["study_id"]: r["visual_share_per_layer"] for r in rows if r["visual_share_per_layer"]}})
        share_plot(mean, out / "attention_share.png", np.asarray(all_after_first, dtype=np.float64).mean(0).tolist())
        summary["attention_share"] = mean
    else:
        summary["attention_share"] = None  # cross-attention decoders read the image through cross-attention only
    if with_grounding:
        result = {"summary": grounding.summarize(per_study_grounding), "tolerance_px": tolerance,
                  "methods": sorted(methods), "per_study": per_study_grounding}
        atomic_write_json(out / "grounding.json", result)
        summary["grounding"] = result["summary"]
    atomic_write_json(out / "summary.json", summary)
    return summary
