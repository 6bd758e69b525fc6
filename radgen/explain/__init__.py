"""Explain generated reports: attention / gradient maps over the image per sentence (and word),
the share of attention on the visual prompt per layer, and grounding scores on IU-Phantom.

    from radgen.explain import explain_studies
    explain_studies(model, studies, "out/explain", root="data/phantom", with_grounding=True)

CLI: `radgen explain` (radgen.explain.cli). Methods and definitions: docs/explain.md.
"""

from radgen.explain.attention import Explanation, encoder_grid, explain, overlay, peak, upsample
from radgen.explain.grounding import in_box, stated_side, study_grounding, summarize
from radgen.explain.pipeline import explain_studies

__all__ = ["Explanation", "encoder_grid", "explain", "explain_studies", "in_box", "overlay", "peak", "stated_side",
           "study_grounding", "summarize", "upsample"]
