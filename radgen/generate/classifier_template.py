"""`radgen baseline --kind classifier-template`: the image-aware floor a grounded generator must clear.

A grounded model's finding head (or any model with one) decides which observations an image shows;
the report is one fixed sentence per predicted finding, or the normal template when it predicts none.
No language model is involved, so this scores what the image signal alone gives on findings; the
generator has to match it on finding F1 and beat it on language (BLEU, METEOR, CIDEr-D), since its
text is otherwise a template. Each sentence is written so that radgen's labeler reads back exactly
its own observation (tests/generate/test_classifier_template.py checks it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from radgen.data.dataset import lateral_inputs
from radgen.data.study import Study
from radgen.generate.decode import generation_dataset, study_batches
from radgen.labels.templates import NORMAL, TEMPLATES



def template_report(findings: Sequence[str]) -> str:
    return " ".join(TEMPLATES[name] for name in findings if name in TEMPLATES) or NORMAL


@torch.no_grad()
def classifier_template_predictions(model: Any, studies: Sequence[Study], root: str | os.PathLike | None = None,
                                    section: str = "findings", batch_size: int = 32) -> list[dict[str, Any]]:
    """One row per study: the template report of the findings `model`'s head predicts, with its probabilities."""
    dataset = generation_dataset(model, studies, root, section)
    rows = []
    for batch in study_batches(dataset, batch_size):
        probs, names = model.predict_findings(pixel_values=batch["pixel_values"], **lateral_inputs(batch))
        for study_id, row_probs, found in zip(batch["study_ids"], probs.tolist(), names):
            rows.append({"study_id": study_id, "findings": template_report(found), "impression": "", "baseline": "classifier-template",
                         "findings_predicted": found,
                         "finding_probs": {n: round(p, 4) for n, p in zip(model.findings.observations, row_probs)}})
    return rows
