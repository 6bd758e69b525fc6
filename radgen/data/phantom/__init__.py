"""IU-Phantom: deterministic synthetic chest radiographs (PA + lateral) rendered from MeSH labels.

`render_terms(terms, study_id, seed, size)` returns the images and per-image ground truth;
`render_study` / `render_studies` write PNGs and phantom Study records; the CLI is
`radgen data phantom` (see docs/phantom.md).
"""

from radgen.data.phantom.render import (
    Rendering,
    deterministic_split,
    render_studies,
    render_study,
    render_terms,
    stable_hash,
    studies_from_label_sets,
    study_seed,
)

__all__ = [
    "Rendering",
    "deterministic_split",
    "render_studies",
    "render_study",
    "render_terms",
    "stable_hash",
    "studies_from_label_sets",
    "study_seed",
]
