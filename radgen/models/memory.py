"""A model's report memory: stored reports keyed by their clinical question, for retrieval-guided decoding.

Why: IU and MIMIC reports follow their author's template, and the indication text says a lot about
who wrote the report; copying the training report with the nearest indication (the `nearest-train`
baseline) beats an image-conditioned generator on BLEU-4 and CIDEr-D while stating almost none of
the image's findings. Retrieval-guided greedy decoding (radgen.models.speculative, `guide_margin`)
lets the decoder take that report's phrasing where it finds it nearly as likely as its own, while
the findings stay the image head's (radgen.models.consistency).

A guide lends only what the finding head can vouch for: sentences about the spine, surgery,
granulomas or a comparison with earlier studies (`UNVOUCHED`) are left out of it, since copied from
another patient's report they would be statements about nobody's image (on the val split, reports
with such a sentence: 21% guided by whole reports, 11% by filtered ones, 5% unguided;
docs/benchmarks.md, Grounding).

The file (`report_memory.json` in the model folder) holds the reports verbatim, as the source
dataset has them, with their study ids, so its licence terms can be honoured as they stand; they
are cleaned the way the recipe trains (data.cleaning) when a guide is handed out. Plain JSON, never
executed, bounded in size when read.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radgen.data.retrieval import NgramIndex, TfidfIndex
from radgen.data.study import Study
from radgen.data.text import clean_report
from radgen.errors import DataError
from radgen.models.consistency import report_sentences
from radgen.io import atomic_write_text

FILENAME = "report_memory.json"
MAX_BYTES = 64 * 1024 * 1024  # MIMIC-CXR's ~220k reports are ~80 MB of text; radgen-small's memory is < 1 MB
MAX_REPORTS = 500_000
# topics a guide sentence may not carry: nothing in the finding head (radgen.models.findings) vouches for them
UNVOUCHED = re.compile(r"\b(spine|spinal|vertebra\w*|scolio\w*|degenerative|sternotomy|surgical|clips?|postsurgical|"
                       r"granulomas?|calcified|prior|previous|compared|comparison|interval|unchanged|stable)\b", re.IGNORECASE)


def vouched_sentences(report: str) -> str:
    """`report` without its sentences on `UNVOUCHED` topics."""
    return " ".join(s for s in report_sentences(report) if not UNVOUCHED.search(s))


class ReportMemory:
    """Reports and the indications they answered. `guide(context)`: the (cleaned) report whose
    indication is nearest to `context` (TF-IDF cosine), or the most frequent report when none shares
    a word; `source(context)`: that report's study id. With `pool` > 1, the consensus report of the
    `pool` nearest: the one most like the others (`consensus`). With `vouched_only` (default) a guide
    keeps only its sentences on topics the finding head covers (`vouched_sentences`); the file keeps
    every report whole."""

    def __init__(self, indications: Sequence[str], reports: Sequence[str], study_ids: Sequence[str] | None = None,
                 cleaning: str = "none", vouched_only: bool = True):
        if len(indications) != len(reports) or (study_ids is not None and len(study_ids) != len(reports)):
            raise ValueError(f"report memory: {len(indications)} indications for {len(reports)} reports")
        if not reports:
            raise DataError("report memory: no reports; build it from a split with report text")
        clean_report("", cleaning)  # an unknown cleaning mode fails here, not at the first guide
        self.indications, self.reports, self.cleaning = list(indications), list(reports), cleaning
        self._vouched_only = vouched_only
        self.study_ids = list(study_ids) if study_ids is not None else [str(i) for i in range(len(reports))]
        self._index = TfidfIndex(self.indications)
        cleaned = Counter(self.cleaned(r) for r in self.reports)
        self.most_frequent = cleaned.most_common(1)[0][0]
        self._most_frequent_at = next(i for i, r in enumerate(self.reports) if self.cleaned(r) == self.most_frequent)
        self._report_index: NgramIndex | None = None  # built at the first pooled lookup

    def __len__(self) -> int:
        return len(self.reports)

    @property
    def vouched_only(self) -> bool:
        return self._vouched_only

    @vouched_only.setter
    def vouched_only(self, value: bool) -> None:
        self._vouched_only = bool(value)
        self._report_index = None  # the consensus is taken over the guides' text: rebuild it for the new one

    def cleaned(self, report: str) -> str:
        """`report` cleaned as the recipe trains (data.cleaning): the text the model learnt to write."""
        return clean_report(report, self.cleaning)

    def _guide_text(self, report: str) -> str:
        text = self.cleaned(report)
        return vouched_sentences(text) if self.vouched_only else text

    def lookup(self, context: str | None, pool: int = 1) -> tuple[str, str]:
        """(study id, cleaned report) of the guide for `context`: one retrieval for both. `pool` > 1:
        the consensus report among the `pool` reports with the nearest indications."""
        nearest = self._index.nearest_k(context or "", max(1, pool))
        if not nearest:
            at = self._most_frequent_at
        elif len(nearest) == 1:
            at = nearest[0]
        else:
            if self._report_index is None:
                self._report_index = NgramIndex([self._guide_text(r) for r in self.reports])
            at = self._report_index.consensus(nearest)
        return self.study_ids[at], self._guide_text(self.reports[at])

    def guide(self, context: str | None, pool: int = 1) -> str:
        return self.lookup(context, pool)[1]

    def source(self, context: str | None, pool: int = 1) -> str:
        return self.lookup(context, pool)[0]

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / FILENAME
        rows = [{"study_id": s, "indication": i, "report": r} for s, i, r in zip(self.study_ids, self.indications, self.reports)]
        atomic_write_text(path, json.dumps({"version": 1, "cleaning": self.cleaning, "reports": rows}, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ReportMemory | None":
        """The memory saved in `directory`, or None when there is none."""
        path = Path(directory) / FILENAME
        if not path.is_file():
            return None
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DataError(f"{path}: {size} bytes, more than a report memory may hold ({MAX_BYTES}); rebuild it from fewer reports")
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            rows = data["reports"]
            if not isinstance(rows, list) or len(rows) > MAX_REPORTS:
                raise ValueError(f"'reports' must be a list of at most {MAX_REPORTS} entries")
            return cls([str(row["indication"] or "") for row in rows], [str(row["report"]) for row in rows],
                       [str(row["study_id"]) for row in rows], cleaning=str(data.get("cleaning", "none")))
        except (ValueError, KeyError, TypeError, DataError) as err:
            raise DataError(f"{path}: not a radgen report memory ({err}); delete it or rebuild it with `radgen model memory`") from err


def memory_from_studies(studies: Sequence[Study], recipe: Any) -> ReportMemory:
    """The memory of `studies`' reports of the recipe's section (data.section), verbatim, cleaned as the
    recipe trains (data.cleaning) when used, keyed by the section the recipe reads as context
    (model.context.section; indication when it reads none)."""
    section, cleaning = recipe.data.section, recipe.data.cleaning
    context = recipe.model.context.section or "indication"
    chosen = [s for s in studies if s.report(section).strip()]
    if not chosen:
        raise DataError(f"no study has {section!r} text to store; pass a manifest split with reports (--split)")
    return ReportMemory([s.sections.get(context, "") or "" for s in chosen], [s.report(section) for s in chosen],
                        [s.study_id for s in chosen], cleaning=cleaning)
