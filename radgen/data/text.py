"""Report text: decoding, section extraction and cleaning.

Three jobs, kept apart so each can be tested on its own:

* `read_report_text(path)` decodes a report file (UTF-8, with or without BOM) and raises a
  one-line `DataError` naming the file when it is not text.
* `extract_sections(text)` splits a free-text radiology report (MIMIC-CXR style, with or without
  headers) into ``findings`` / ``impression`` / ``indication`` / ``comparison``.
* `clean_report(text, mode)` normalises a report for training and scoring: the two R2Gen cleaners
  (reproduced exactly, quirks included, so numbers stay comparable with the literature), a light
  ``clean`` mode that keeps case and punctuation, seed 004's ``lowercase-alnum`` and ``none``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from radgen.errors import DataError

CLEANING_MODES = ("r2gen-iu", "r2gen-mimic", "clean", "lowercase-alnum", "none")
SECTION_CHOICES = ("findings", "impression", "both")


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_report_bytes(data: bytes, source: str | os.PathLike = "<bytes>") -> str:
    """Decode report bytes as UTF-8 (a BOM is dropped); anything else is a one-line DataError.

    We do not guess other encodings: a silently mis-decoded report would train and score as
    garbage, so the user is told which file to convert instead.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{source}: report is not valid UTF-8 (byte {err.start}); convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_report_text(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: report file not found; check the dataset root and layout") from None
    return decode_report_bytes(data, path)


# --------------------------------------------------------------------------------------------
# Section extraction (MIMIC-CXR free-text reports)
# --------------------------------------------------------------------------------------------

# Header spellings seen in MIMIC-CXR reports, lower case, mapped to our section names. Headers we
# recognise but do not keep (technique, examination, ...) still end the previous section.
_HEADER_TO_SECTION: dict[str, str | None] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings+impression",
    "findings/impression": "findings+impression",
    "impression and findings": "findings+impression",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "indication": "indication",
    "indications": "indication",
    "history": "indication",
    "clinical history": "indication",
    "clinical information": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": None,
    "examination": None,
    "exam": None,
    "procedure": None,
    "wet read": None,
    "notification": None,
    "recommendation": None,
    "recommendations": None,
    "recommendation(s)": None,
    "addendum": None,
    "type of examination": None,
    "study": None,
}

# A header starts a line (after optional spaces), is one of the known names in any case, and ends
# with a colon; the section text may follow on the same line. Anchoring at line start keeps
# "... no change in impression: ..." inside a sentence from being read as a header.
_HEADER_RE = re.compile(
    r"^[ \t]*(" + "|".join(sorted((re.escape(h) for h in _HEADER_TO_SECTION), key=len, reverse=True)) + r")[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
# Title lines that carry no content ("FINAL REPORT", "ADDENDUM" banners without a colon).
_TITLE_RE = re.compile(r"^[ \t]*(final report|preliminary report|final addendum)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_WHITESPACE_RE = re.compile(r"\s+")


def _normalise_whitespace(text: str) -> str:
    """Join wrapped lines and paragraphs into one line with single spaces."""
    return _WHITESPACE_RE.sub(" ", text).strip()


def extract_sections(text: str) -> tuple[dict[str, str], str]:
    """Split a report into sections; returns (sections, how) where `how` says what was found.

    `how` is ``"headers"`` when a FINDINGS/IMPRESSION header was found, ``"no_header"`` when none was
    and the whole report (minus any other recognised sections and title lines) became findings,
    and ``"empty"`` for a report with no text. A "FINDINGS AND IMPRESSION:" section goes to
    findings only, so that ``section="both"`` does not repeat it.
    Wrapped lines are joined: sections come back as single lines with single spaces.
    """
    text = _TITLE_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    matches = list(_HEADER_RE.finditer(text))
    sections: dict[str, str] = {}
    preamble = text[: matches[0].start()] if matches else text
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = _normalise_whitespace(text[match.end() : end])
        target = _HEADER_TO_SECTION[match.group(1).lower()]
        if target == "findings+impression":
            target = "findings"
        if target is None or not body:
            continue
        # Repeated headers (e.g. an addendum with its own IMPRESSION) are appended in order.
        sections[target] = f"{sections[target]} {body}" if sections.get(target) else body
    if "findings" in sections or "impression" in sections:
        return sections, "headers"
    body = _normalise_whitespace(preamble) if matches else _normalise_whitespace(text)
    if not body:
        return sections, "empty"
    sections["findings"] = body
    return sections, "no_header"


def select_section(sections: dict[str, str], section: str) -> str:
    """The text used as the report: 'findings', 'impression' or 'both' (findings then impression)."""
    if section == "both":
        return " ".join(part for part in (sections.get("findings", ""), sections.get("impression", "")) if part).strip()
    if section not in SECTION_CHOICES:
        raise DataError(f"unknown report section {section!r}; use one of {', '.join(SECTION_CHOICES)}")
    return (sections.get(section) or "").strip()


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------

# R2Gen's sentence cleaner pattern, character for character. Note the quirk: inside the class,
# ":-\[" is a RANGE from ':' to '[', so it also deletes ; < = > ? @ and A-Z (harmless after
# lower-casing), while a plain '-' is kept. '#', digits and '$' survive.
_R2GEN_PUNCT_RE = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _r2gen_sentence(sentence: str) -> str:
    return _R2GEN_PUNCT_RE.sub(
        "", sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
    )


def _r2gen_join(report: str) -> str:
    # R2Gen filters with `sent_cleaner(sent) != []`, which is always true for a string, so empty
    # sentences are KEPT and show up as ". ." runs; we keep that to match its vocabulary/scores.
    tokens = [_r2gen_sentence(sentence) for sentence in report.strip().lower().split(". ")]
    return " . ".join(tokens) + " ."


def _drop_numbering(text: str) -> str:
    # R2Gen's numbering removal, in its order. '1. ' is removed anywhere (so "11. " becomes "1"),
    # '2. '..'5. ' only after '. ' or ' '.
    text = text.replace("1. ", "")
    for number in "2345":
        text = text.replace(f". {number}. ", ". ")
    for number in "2345":
        text = text.replace(f" {number}. ", ". ")
    return text


def clean_report_r2gen_iu(report: str) -> str:
    """R2Gen's ``Tokenizer.clean_report_iu_xray``, reproduced exactly.

    Source: cuhksz-nlp/R2Gen, modules/tokenizers.py (Chen et al., EMNLP 2020). Re-implemented
    (not imported: R2Gen is not a package) with the same operations in the same order.
    """
    text = report.replace("..", ".").replace("..", ".").replace("..", ".")
    return _r2gen_join(_drop_numbering(text))


def clean_report_r2gen_mimic(report: str) -> str:
    """R2Gen's ``Tokenizer.clean_report_mimic_cxr``, reproduced exactly (same source as above).

    Differences from the IU cleaner: newlines become spaces, '__' runs are collapsed (7 passes),
    double spaces collapsed (6 passes) and '..' collapsed (8 passes) before numbering removal.
    """
    text = report.replace("\n", " ")
    for _ in range(7):
        text = text.replace("__", "_")
    for _ in range(6):
        text = text.replace("  ", " ")
    for _ in range(8):
        text = text.replace("..", ".")
    return _r2gen_join(_drop_numbering(text))


_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([.,;:?!])")
_REPEATED_PERIOD_RE = re.compile(r"\.(?:\s*\.)+")
_LIST_NUMBER_RE = re.compile(r"(^|(?<=[.:]\s))\d{1,2}[.)]\s+")


def clean_report_light(report: str) -> str:
    """The ``clean`` mode: readable text for LLM decoders and human eyes.

    Keeps case and punctuation. Joins wrapped lines, collapses whitespace, removes list numbering
    ("1. ", "2) ") at sentence starts, collapses repeated periods (". ." and "..") into one, removes
    spaces before punctuation and strips whitespace. De-identification placeholders (IU's "XXXX",
    MIMIC's "___") are kept: deleting them leaves broken sentences, and keeping them lets a model
    learn to emit the placeholder rather than invent a name or date.
    """
    text = _normalise_whitespace(report)
    text = _LIST_NUMBER_RE.sub("", text)
    text = _REPEATED_PERIOD_RE.sub(".", text)
    text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    return _normalise_whitespace(text)


# Everything but ASCII lower-case letters and digits, after lower-casing (runs of it, whitespace included).
_NOT_ALNUM_RE = re.compile(r"[^a-z0-9]+")


def clean_report_lowercase_alnum(report: str) -> str:
    """The ``lowercase-alnum`` mode: seed 004's report preprocessing (Sec. III-A, "we removed any
    special characters from the reports and converted all tokens to lowercase").

    The paper gives no code, so "special character" is read as anything that is not a letter or a
    digit: punctuation, symbols, non-ASCII letters and MIMIC's "___" placeholders go. Each run of
    them becomes one space rather than nothing, so "right-sided" and "effusion.No" do not glue two
    words into one ("right sided", "effusion no"); decimals split ("4.5 cm" → "4 5 cm").
    """
    return _NOT_ALNUM_RE.sub(" ", report.lower()).strip()


def clean_report(text: str, mode: str = "r2gen-iu") -> str:
    """Clean report text: mode is one of CLEANING_MODES ('r2gen-iu', 'r2gen-mimic', 'clean', 'lowercase-alnum', 'none')."""
    if mode == "r2gen-iu":
        return clean_report_r2gen_iu(text)
    if mode == "r2gen-mimic":
        return clean_report_r2gen_mimic(text)
    if mode == "clean":
        return clean_report_light(text)
    if mode == "lowercase-alnum":
        return clean_report_lowercase_alnum(text)
    if mode == "none":
        return text
    raise DataError(f"unknown report cleaning mode {mode!r}; use one of {', '.join(CLEANING_MODES)}")


_PLACEHOLDER_RE = re.compile(r"\b(?:X{2,}|_{2,})\b|_{2,}")
_CONTEXT_KEEP_RE = re.compile(r"[^a-z0-9 ,./%-]")


def clean_context(text: str | None, max_words: int = 12) -> str:
    """A study's indication as short prompt text: lower case, de-identification placeholders
    (IU "XXXX", MIMIC "___") and odd characters removed, at most `max_words` words, no final period.

    Placeholders go because, unlike in a report, nothing in the prompt should be copied; the word
    limit bounds the prompt (and so the decoding cost) whatever a manifest or request holds.
    """
    if not text:
        return ""
    words = _CONTEXT_KEEP_RE.sub(" ", _PLACEHOLDER_RE.sub(" ", text).lower()).split()
    words = [word.lstrip("-") for word in words if word.strip(",./-")][: max(0, max_words)]
    return " ".join(words).strip(" ,.")
