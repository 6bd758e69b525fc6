"""The shipped default model (radgen/assets/default_model) loads and writes a report.

`radgen demo`, `radgen serve` and `radgen generate` use this model when no --model is given; nothing
else in the suite loads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import radgen
from radgen.data.phantom import render_study
from radgen.data.study import Study
from radgen.labels.labeler import label_report

DEFAULT_MODEL = Path(radgen.__file__).parent / "assets" / "default_model"


@pytest.mark.slow
def test_shipped_model_reports_on_a_phantom_with_cardiomegaly(tmp_path):
    from radgen.generate.decode import generate_reports, load_model

    assert (DEFAULT_MODEL / "model.safetensors").is_file()
    model = load_model(DEFAULT_MODEL, device="cpu")
    base = Study(study_id="shipped-cm", subject_id="shipped-cm", split="test", source="test",
                 sections={"findings": "", "impression": ""}, labels={"mesh": ["Cardiomegaly/moderate"]})
    study = render_study(base, tmp_path, seed=0, size=512)  # the size the shipped model was trained on
    assert study.meta["phantom"]["unrenderable"] == []  # the finding is drawn
    rows = generate_reports(model, [study], root=tmp_path, progress=False, num_beams=1, max_new_tokens=40)
    assert len(rows) == 1
    text = rows[0]["findings"]  # section "findings" is the default
    # the findings-consistency step may add sentences beyond the decoder's 40 tokens
    assert len(text.split()) >= 3 and len(rows[0]["tokens"]) > 0
    # grounded: the head sees the enlarged heart, the prompt names it, and the report says it
    assert "Cardiomegaly" in rows[0]["findings_predicted"] and rows[0]["finding_probs"]["Cardiomegaly"] > 0.5
    assert label_report(text)["Cardiomegaly"] in (1, -1), text
    # the shipped memory holds the training split and guides by default: each row names its guide
    assert (model.recipe.generate.guide_margin, model.recipe.generate.guide_pool) == (5.0, 40) and len(model.report_memory) == 2285
    assert rows[0]["guide_study_id"].startswith("iu-") and rows[0]["guide_report"]
    own = generate_reports(model, [study], root=tmp_path, progress=False, num_beams=1, max_new_tokens=40, guide_margin=0.0)
    assert "guide_study_id" not in own[0]  # the decoder's own text on request
    assert own[0]["findings_predicted"] == rows[0]["findings_predicted"]  # the findings are the head's either way
    assert label_report(own[0]["findings"])["Cardiomegaly"] in (1, -1)
