"""Render studies: MeSH terms → PA + lateral PNGs, per-image ground truth, and a radgen manifest.

Determinism: each study's seed is derived from the run seed and the study id with SHA-256 (never
Python's salted ``hash()``), and every consumer of randomness gets its own stream (anatomy, each
view's drawing, each view's noise, each term), so adding a term changes only that term's sign
and the same seed always yields the same PNG bytes, whichever worker renders the study.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Importing the sign modules registers their renderers.
from radgen.data.phantom import signs_bone, signs_chest, signs_devices, signs_lung, signs_pleura  # noqa: F401
from radgen.data.phantom.anatomy import LATERAL, PA, Canvas, compose, draw_pa, sample_body
from radgen.data.phantom.lateral import draw_lateral
from radgen.data.phantom.findings import NON_FINDINGS, renderer_for
from radgen.data.study import ImageRef, Study
from radgen.errors import DataError
from radgen.io import atomic_write_bytes, read_jsonl
from radgen.labels.mesh import MeshTerm, mesh_to_chexpert, parse_mesh_field
from radgen.labels.observations import NO_FINDING

VIEWS = (PA, LATERAL)
PHANTOM_VERSION = 1
# Stream ids for np.random.SeedSequence; terms use a hash of their text instead.
_ANATOMY, _DRAW, _NOISE = 0, 1, 3


def stable_hash(text: str) -> int:
    """64-bit unsigned hash of `text` that is the same in every process and Python version."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def study_seed(seed: int, study_id: str) -> int:
    return stable_hash(f"{seed}:{study_id}")


def deterministic_split(uid: str, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """80/10/10 train/val/test by a stable hash of the id (for sources without an official split)."""
    u = (stable_hash(f"split:{uid}") % 10_000) / 10_000
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def observation_of(term: MeshTerm) -> str | None:
    """The CheXpert observation this single term implies (None if it maps to none)."""
    labels = mesh_to_chexpert([term])
    return next((name for name in labels if name != NO_FINDING), None)


@dataclass
class Rendering:
    """The rendered views of one label set and their ground truth."""

    images: dict[str, np.ndarray]
    marks: dict[str, list[dict[str, Any]]]
    unrenderable: list[str] = field(default_factory=list)
    seed: int = 0


def render_terms(terms: str | list[str] | None, study_id: str, seed: int = 0, size: int = 512) -> Rendering:
    """Render PA and lateral views of a patient with these MeSH terms.

    Returns 8-bit images, the per-view marks ({term, observation, laterality, box}) and the terms
    that could not be rendered (no renderer for the heading, an unsupported variant, or a sign
    that falls outside both views).
    """
    if size < 64:
        raise DataError(f"phantom image size {size} is too small; use --size 64 or more (512 is the default)")
    sseed = study_seed(seed, study_id)

    def stream(*key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([sseed & 0xFFFFFFFF, sseed >> 32, *key]))

    body = sample_body(stream(_ANATOMY))
    unrenderable: list[str] = []
    jobs = []
    occurrences: Counter[str] = Counter()
    for term in parse_mesh_field(terms):
        if term.heading.lower() in NON_FINDINGS:
            continue
        renderer = renderer_for(term)
        if renderer is None:
            unrenderable.append(term.raw)
            continue
        occurrences[term.raw] += 1
        key = stable_hash(f"{term.raw}#{occurrences[term.raw]}")
        jobs.append((term, renderer, stream(100, key & 0xFFFFFFFF, key >> 32)))
    for term, renderer, rng in jobs:
        renderer.adjust(body, term, rng)

    canvases = {PA: Canvas(size, PA, body)}
    planned = []
    for term, renderer, rng in jobs:
        plan = renderer.plan(term, canvases[PA], rng)
        if plan is None:
            unrenderable.append(term.raw)
        else:
            planned.append((term, renderer, plan))
    draw_pa(canvases[PA], stream(_DRAW, 0))
    canvases[LATERAL] = Canvas(size, LATERAL, body)
    draw_lateral(canvases[LATERAL], stream(_DRAW, 1))

    marks: dict[str, list[dict[str, Any]]] = {view: [] for view in VIEWS}
    for term, renderer, plan in planned:
        drawn = False
        observation = observation_of(term)
        for view in VIEWS:
            for box, laterality in renderer.draw(canvases[view], plan):
                if box is None:
                    continue
                drawn = True
                marks[view].append({"term": term.raw, "observation": observation, "laterality": laterality, "box": [int(v) for v in box]})
        if not drawn:
            unrenderable.append(term.raw)
    images = {view: compose(canvases[view], stream(_NOISE, i)) for i, view in enumerate(VIEWS)}
    return Rendering(images=images, marks=marks, unrenderable=unrenderable, seed=sseed)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 3: a third faster than the default 6 for ~9% larger files (the noise is incompressible anyway).
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def safe_name(study_id: str) -> str:
    """File-system-safe stem for a study id (a short hash keeps distinct ids distinct)."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", study_id)[:80]
    return clean if clean == study_id else f"{clean}-{stable_hash(study_id) % 16**8:08x}"


def render_study(study: Study, out_dir: str | Path, seed: int = 0, size: int = 512) -> Study:
    """Render one study into `out_dir/images/` and return its phantom Study record.

    The report sections, split, subject and MeSH terms are kept; images are replaced by the two
    rendered views; labels["chexpert"] is recomputed from the MeSH terms; meta["phantom"] holds the
    ground truth per image.
    """
    mesh = study.labels.get("mesh") or []
    if isinstance(mesh, str):
        mesh = [t.strip() for t in mesh.split(";") if t.strip()]
    rendering = render_terms(mesh, study.study_id, seed=seed, size=size)
    out_dir = Path(out_dir)
    images = []
    stem = safe_name(study.study_id)
    for view in VIEWS:
        relative = f"images/{stem}_{view}.png"
        atomic_write_bytes(out_dir / relative, png_bytes(rendering.images[view]))
        images.append(ImageRef(path=relative, view=view))
    meta = dict(study.meta)
    meta["phantom"] = {
        "version": PHANTOM_VERSION,
        "seed": seed,
        "study_seed": str(rendering.seed),
        "size": size,
        "images": {ref.path: rendering.marks[ref.view] for ref in images},
        "unrenderable": rendering.unrenderable,
    }
    labels = dict(study.labels)
    labels["mesh"] = list(mesh)
    labels["chexpert"] = mesh_to_chexpert(list(mesh))
    source = f"phantom/{study.source}" if study.source else "phantom"
    return Study(
        study_id=study.study_id, subject_id=study.subject_id, images=images, sections=dict(study.sections),
        labels=labels, split=study.split, source=source, meta=meta,
    )


def _render_job(args) -> Study:
    study, out_dir, seed, size = args
    return render_study(study, out_dir, seed=seed, size=size)


def render_studies(studies: list[Study], out_dir: str | Path, seed: int = 0, size: int = 512, workers: int = 2, progress: bool = True) -> Iterator[Study]:
    """Render studies in order with a process pool; yields phantom Study records as they finish."""
    jobs = [(study, str(out_dir), seed, size) for study in studies]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="study", desc="phantom")
    try:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield _render_job(job)
                if bar:
                    bar.update()
            return
        # fork: workers inherit the imported renderers; nothing in them holds threads or locks.
        with get_context("fork").Pool(workers) as pool:
            for result in pool.imap(_render_job, jobs, chunksize=4):
                yield result
                if bar:
                    bar.update()
    finally:
        if bar:
            bar.close()


def studies_from_label_sets(path: str | Path) -> list[Study]:
    """Read a --labels-only JSONL file: rows {"id": ..., "mesh": [...] or "a;b"} (+ optional "split")."""
    studies = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if "id" not in row or "mesh" not in row:
            raise DataError(f"{path}:{number}: a label-set row needs 'id' and 'mesh' (e.g. {{\"id\": \"s1\", \"mesh\": [\"Cardiomegaly/mild\"]}})")
        mesh = row["mesh"]
        if isinstance(mesh, str):
            mesh = [t.strip() for t in mesh.split(";") if t.strip()]
        if not isinstance(mesh, list) or not all(isinstance(t, str) for t in mesh):
            raise DataError(f"{path}:{number}: 'mesh' must be a list of strings or a ';'-separated string")
        study_id = str(row["id"])
        studies.append(Study(study_id=study_id, labels={"mesh": mesh}, split=row.get("split") or deterministic_split(study_id), source="labels"))
    return studies


def unrenderable_summary(studies: list[Study]) -> Counter[str]:
    """Count unrenderable terms by heading over rendered studies."""
    counts: Counter[str] = Counter()
    for study in studies:
        for raw in study.meta.get("phantom", {}).get("unrenderable", []):
            counts[raw.split("/")[0].strip()] += 1
    return counts
