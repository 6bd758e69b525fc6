"""What one request needs from the model: validated image → tensor → report JSON.

Kept apart from the web layer so `radgen demo`, the load benchmark and tests use the same path.

* `sniff_kind(data)`: the file type from magic bytes only (PNG, JPEG, DICOM's "DICM" at offset
  128) — a filename or a client's Content-Type is never trusted.
* `ReportService.prepare(data)`: sniff, decode with `radgen.data.images.decode_image` (DataError on
  corrupt input, an image over the pixel budget or DICOM without pixels), apply the model's
  ImageTransform; keep a small preview only when a heatmap is asked for. `lateral=`: the study's
  lateral view, decoded the same way where the model's finding head reads one.
* `ReportService.run_batch(jobs)`: one batched `model.generate`, then per report the sentences with
  confidences and, when asked, an attention heatmap. Runs on the BatchQueue's worker thread only.

Nothing here logs image content or DICOM header values (patient data): logs carry sizes, kinds
and timings only.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from radgen.allocator import release_free_heap
from radgen.errors import DataError, WeightsError
from radgen.pipeline import resolve_model

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128

DISCLAIMER = ("Research software. Draft text from a machine-learning model for research and demonstration; "
              "NOT a medical device and NOT for clinical use. A radiologist must write the report.")
CARD_FILE = "model_card.json"

# The same resolver as `radgen generate --model` (a shipped name, a model folder or a run folder);
# kept under this name because `radgen.serve.resolve_model_dir` is public.
resolve_model_dir = resolve_model


class UnsupportedMediaError(Exception):
    """The bytes are not PNG, JPEG or DICOM (HTTP 415)."""


def sniff_kind(data: bytes) -> str:
    """'png' | 'jpeg' | 'dicom' from the leading bytes; UnsupportedMediaError otherwise."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    raise UnsupportedMediaError(
        "unsupported file type: expected PNG, JPEG or DICOM (Part 10, 'DICM' at byte 128); the file's content "
        "was checked, not its name")


# -------------------------------------------------------------------------------- model card
def model_card(model: Any, model_dir: str | Path | None) -> dict[str, Any]:
    """What the page and the API show about the model: recipe facts + DIR/model_card.json.

    model_card.json is written by whoever trains/ships the model; its keys (e.g. "trained_on",
    "intended_use", "limitations", "metrics") are passed through. A missing file is said plainly
    rather than guessed.
    """
    recipe = model.recipe
    card: dict[str, Any] = {
        "name": recipe.name,
        "description": recipe.description,
        "architecture": {
            "encoder": recipe.model.encoder.name or recipe.model.encoder.kind,
            "connector": recipe.model.connector.kind,
            "decoder": recipe.model.decoder.name,
            "peft": recipe.model.peft.method,
        },
        "based_on": recipe.source,
        "section": recipe.data.section,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "trained_on": None,
        "disclaimer": DISCLAIMER,
    }
    if model_dir is not None:
        card["path"] = Path(model_dir).name  # the folder's name only: clients need not learn the server's file layout
        path = Path(model_dir) / CARD_FILE
        if path.is_file():
            try:
                extra = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise WeightsError(f"{path}: not valid JSON ({err.msg}); fix or delete the model card") from None
            if not isinstance(extra, dict):
                raise WeightsError(f"{path}: expected a JSON object")
            card.update({k: v for k, v in extra.items() if k != "disclaimer"})
    if not card["trained_on"]:
        card["trained_on"] = f"not recorded (no {CARD_FILE} in the model folder)"
    return card


# -------------------------------------------------------------------------------- report JSON
def report_json(model: Any, report: Any) -> dict[str, Any]:
    """Findings / Impression / sentences [{text, confidence}] / confidence for one GeneratedReport.

    The sentence split and confidence (exp of the mean token log-probability) are the generation
    stage's (`radgen.generate.prediction_row`), so the page shows what `radgen generate` writes.
    """
    from radgen.generate.decode import prediction_row

    section = model.recipe.data.section if model.recipe.data.section in ("findings", "impression") else "findings"
    row = prediction_row(model, "upload", report, section)
    out = {
        "findings": row["findings"], "impression": row["impression"], "section": section,
        "sentences": [{"text": s["text"], "confidence": s["confidence"]} for s in row["sentences"]],
        "confidence": row["confidence"] if row["confidence"] is not None else 0.0,
        "_spans": [tuple(s["token_span"]) for s in row["sentences"]],  # for the heatmap; not sent
    }
    if "finding_probs" in row:  # grounded models: the image head's probabilities behind the text
        out["finding_probs"], out["findings_predicted"] = row["finding_probs"], row["findings_predicted"]
    if "guide_study_id" in row:  # retrieval-guided decoding: whose wording the decoder could borrow
        out["guide_study_id"], out["guide_report"] = row["guide_study_id"], row["guide_report"]
    return out


# -------------------------------------------------------------------------------- heatmap
@dataclass
class Overlays:
    report: bytes  # PNG: the whole report's attention over the image
    sentences: list[bytes]  # PNG per sentence (same order as the report's sentences)
    method: str  # how the maps were made (radgen.explain.attention names it)


def attention_overlays(model: Any, image: Image.Image, pixel_values: torch.Tensor, token_ids: list[int],
                       spans: list[tuple[int, int]], per_sentence: bool = True) -> Overlays:
    """Attention overlays over `image` (the server passes a preview of at most HEATMAP_MAX_SIDE
    pixels per side, see `heatmap_preview`): the report's and each sentence's.

    `radgen.explain.attention` does the work (per-recipe method: composed / cross / decoder
    attention, or gradient × input); the report's map is the mean of its token maps (or of its
    sentence maps for the gradient method).
    """
    from radgen.explain.attention import explain, overlay, upsample

    def png(heat) -> bytes:
        buffer = io.BytesIO()
        overlay(image, upsample(heat, image.size, model.image_transform.resize)).save(buffer, format="PNG")
        return buffer.getvalue()

    sentence_spans = list(spans)
    result = explain(model, pixel_values, [list(token_ids)], [sentence_spans or [(0, len(token_ids))]])[0]
    if result.token_maps is not None and len(result.token_maps):
        heat = result.token_maps.mean(0)
    else:
        heat = sum(result.sentence_maps) / max(1, len(result.sentence_maps))
    sentences = [png(m) for m in result.sentence_maps] if per_sentence and sentence_spans else []
    return Overlays(png(heat), sentences, result.method)


HEATMAP_MAX_SIDE = 512  # overlays are drawn on a preview this size: the page shows them at most 420 px high


def heatmap_preview(image: Image.Image) -> Image.Image:
    """The image the overlays are drawn on: the upload scaled down (never up) to HEATMAP_MAX_SIDE.

    The attention maps are at the encoder's patch resolution, so a full-size overlay adds no detail,
    only memory (float RGBA per source pixel) and time on the model's worker thread.
    """
    scale = HEATMAP_MAX_SIDE / max(image.size)
    if scale >= 1:
        return image.copy()
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)


# -------------------------------------------------------------------------------- service
@dataclass
class Prepared:
    """One validated upload: what the worker thread needs, nothing else (no DICOM header, no full-size image)."""

    kind: str
    image: Image.Image | None  # preview for the heatmap (heatmap_preview), only when one was asked for
    pixel_values: torch.Tensor  # (C, H, W)
    heatmap: bool = False
    indication: str = ""  # the request's clinical indication (prompt context for models that read one)
    lateral_pixel_values: torch.Tensor | None = None  # the study's lateral view, for a finding head that reads one


class ReportService:
    """Wraps a ReportGenerator for serving: validation, batched generation, JSON."""

    def __init__(self, model: Any, model_dir: str | Path | None = None, num_beams: int | None = None,
                 max_new_tokens: int | None = None) -> None:
        from radgen.generate.decode import GenerationSettings

        self.model = model.eval()
        self.model_dir = model_dir
        # The recipe's generate: section; sampling is forced off so a page reload gives the same draft (word
        # for word in fp32; bf16 may reword a near-tie under other batching, docs/serve.md).
        settings = GenerationSettings.from_recipe(model.recipe, num_beams=num_beams, max_new_tokens=max_new_tokens)
        settings.do_sample = False
        self.generate_options = settings.generate_kwargs()
        self.card = model_card(model, model_dir)

    @classmethod
    def from_directory(cls, model_dir: str | Path | None, dtype: str = "auto", **options: Any) -> "ReportService":
        """Load a shipped name, model folder or run folder (None: radgen-small) for inference with
        `radgen.generate.load_model` (decoder precision `dtype`, as there)."""
        from radgen.generate.decode import load_model
        from radgen.models.persist import WEIGHTS_FILE
        from radgen.train.checkpoint import check_safetensors

        path = resolve_model(model_dir)
        if (path / WEIGHTS_FILE).is_file():
            check_safetensors(path / WEIGHTS_FILE)  # a truncated copy: one line, not a loader traceback
        return cls(load_model(path, dtype=dtype), model_dir=path, **options)

    @property
    def reads_lateral(self) -> bool:
        """Whether the model's finding head reads a lateral view next to the frontal one (radgen-small's does)."""
        findings = getattr(self.model, "findings", None)
        return findings is not None and bool(getattr(findings, "lateral", False))

    def prepare(self, data: bytes, heatmap: bool = False, indication: str = "", lateral: bytes | None = None) -> Prepared:
        """Sniff + decode + transform the upload, and its lateral view when one is given and the model
        reads it; UnsupportedMediaError (415) or DataError (422), naming the lateral where it is at fault."""
        kind, image = self._decode(data, "uploaded")
        lateral_pixel_values = None
        if lateral is not None and self.reads_lateral:
            lateral_pixel_values = self.model.image_transform(self._decode(lateral, "uploaded lateral")[1])
        return Prepared(kind=kind, image=heatmap_preview(image) if heatmap else None, pixel_values=self.model.image_transform(image),
                        heatmap=heatmap, indication=indication, lateral_pixel_values=lateral_pixel_values)

    def _decode(self, data: bytes, what: str) -> tuple[str, Image.Image]:
        from radgen.data.images import decode_image, encoder_colour

        try:
            kind = sniff_kind(data)
        except UnsupportedMediaError as err:
            raise UnsupportedMediaError(f"{what} file: {err}") from None
        try:
            # decode_image refuses, from the header, anything over the pixel budget (images.MAX_PIXELS).
            # the recipe's data.colour: a colour model (ROCO, seed 001) sees the upload's colours as in training
            image = decode_image(data, f"{what} {kind.upper()} file",
                                 colour=encoder_colour(self.model.recipe.data.colour, self.model.image_transform))
        except DataError as err:
            if "no PixelData" in str(err):  # the data layer's hint ("remove it from the manifest") is for datasets
                raise DataError(f"the {what} DICOM file has no pixel data (a structured report or header-only file); "
                                "upload a DICOM that contains the radiograph image") from None
            raise
        return kind, image

    def run_batch(self, jobs: list[Prepared]) -> list[dict[str, Any]]:
        try:
            return self._run_batch(jobs)
        finally:
            release_free_heap()

    def _run_batch(self, jobs: list[Prepared]) -> list[dict[str, Any]]:
        from radgen.data.dataset import stacked_laterals

        pixel_values = torch.stack([job.pixel_values for job in jobs])
        laterals = stacked_laterals([job.lateral_pixel_values for job in jobs], pixel_values[0])
        with torch.inference_mode():
            reports = self.model.generate(pixel_values=pixel_values, contexts=[job.indication for job in jobs], **laterals,
                                          **self.generate_options)
        results = []
        for job, pixels, report in zip(jobs, pixel_values, reports):
            result = report_json(self.model, report)
            result["lateral_read"] = job.lateral_pixel_values is not None
            if job.heatmap:
                # Outside inference_mode: the gradient fallback of radgen.explain needs autograd.
                overlays = attention_overlays(self.model, job.image, pixels[None], report.token_ids, result.pop("_spans"))
                result["heatmap"] = base64.b64encode(overlays.report).decode("ascii")
                for sentence, image_png in zip(result["sentences"], overlays.sentences):
                    sentence["heatmap"] = base64.b64encode(image_png).decode("ascii")
                result["heatmap_method"] = overlays.method
            else:
                result.pop("_spans")
            results.append(result)
        return results

    def report_for_bytes(self, data: bytes, heatmap: bool = False, lateral: bytes | None = None) -> dict[str, Any]:
        """One image (and its lateral view, optional), no queue (CLI / notebook use)."""
        return self.run_batch([self.prepare(data, heatmap, lateral=lateral)])[0]
