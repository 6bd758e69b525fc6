"""One-call use from Python: `radgen.load(...)` returns a pipeline that drafts a report per image.

    import radgen
    pipe = radgen.load("radgen-small")            # the shipped model; or a model folder / run folder
    out = pipe("chest.png")                       # path, PIL image, numpy array, DICOM file or pydicom Dataset
    out["findings"], out["sentences"][0]["confidence"]
    outs = pipe(["a.dcm", "b.png"], batch_size=8) # a list is decoded in batches, one row per input

Each result is the row `radgen generate` writes to its JSONL (the generated section, sentences
with confidences, token log-probabilities), with `study_id` naming the input. Images go through
the same decoding as files on disk (radgen.data.images: DICOM windowing, 16-bit stretch,
grayscale), then the model's own transform.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radgen.errors import DataError, WeightsError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
# Trained models that ship inside the package, by name. Recipe names without shipped weights
# (e.g. blip2-opt-lora) are not here: they need `radgen train` first.
MODEL_NAMES = {"radgen-small": DEFAULT_MODEL_DIR, "default": DEFAULT_MODEL_DIR}


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """A shipped model's name (`radgen-small`, `default`), a saved model folder or a training run folder
    (its best/); None is the shipped default. Returns the folder that holds radgen_config.yaml.

    The one resolver behind every `--model` (generate, explain, serve, demo, baseline, model export)
    and `radgen.load`, so the three spellings work the same everywhere. An existing path wins over a
    name: a folder called `default` in the working directory is that folder.
    """
    from radgen.generate.decode import resolve_model_dir

    if model is None:
        model = "radgen-small"
    text = str(model)
    if text in MODEL_NAMES and not Path(text).exists():
        folder = MODEL_NAMES[text]
        if not (folder / "radgen_config.yaml").is_file():
            raise WeightsError(f"{folder}: the shipped model '{text}' is missing from this installation; reinstall radgen "
                               "or pass --model with a model folder or a training run folder")
        return folder
    if not Path(text).exists():
        from radgen.config import recipe_names

        if text in recipe_names():
            raise WeightsError(f"{text}: not a model; '{text}' is a recipe without shipped weights; train it with "
                               f"`radgen train {text}` and pass the run folder")
        raise WeightsError(f"{text}: no such model folder or shipped model name; known names: {', '.join(MODEL_NAMES)}; "
                           "a model folder (save_pretrained) or a training run folder (uses RUN/best) also works")
    return resolve_model_dir(text)


def to_image(item: Any, name: str = "<image>", colour: str = "gray"):
    """An 8-bit PIL image from a path, bytes, PIL image, numpy array or pydicom Dataset: grayscale
    ("L"), or with colour="keep" "RGB" where the input really is colour (as radgen.data.images)."""
    import numpy as np
    from PIL import Image

    from radgen.data.images import _stretch_to_uint8, check_colour, decode_image, load_image, to_8bit

    check_colour(colour)
    if isinstance(item, (str, os.PathLike)):
        return load_image(item, colour=colour)
    if isinstance(item, (bytes, bytearray)):
        return decode_image(bytes(item), name, colour=colour)
    if isinstance(item, Image.Image):
        return to_8bit(item, colour)  # the same conversion as an image file read from disk
    if type(item).__module__.startswith("pydicom"):
        return _dataset_to_image(item, name, colour)
    if hasattr(item, "detach") and hasattr(item, "numpy"):  # a torch tensor
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        array = item.squeeze(-1) if item.ndim == 3 and item.shape[-1] == 1 else item
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            rgb = array[..., :3]
            if rgb.dtype != np.uint8:  # one min..max over all three channels keeps their ratios (the hue)
                rgb = _stretch_to_uint8(rgb.reshape(rgb.shape[0], -1)).reshape(rgb.shape)
            return to_8bit(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"), colour)
        if array.ndim != 2:
            raise DataError(f"{name}: an array must be H×W (grayscale) or H×W×3 (RGB), got shape {tuple(item.shape)}")
        gray = array if array.dtype == np.uint8 else _stretch_to_uint8(array)
        return Image.fromarray(np.ascontiguousarray(gray), mode="L")
    raise DataError(f"{name}: cannot read a {type(item).__name__} as an image; pass a file path, bytes, a PIL image, "
                    "a numpy array or a pydicom Dataset")


def _dataset_to_image(dataset: Any, name: str, colour: str = "gray"):
    """Serialise a pydicom Dataset and decode it like a file, so windowing and MONOCHROME1 are handled once."""
    from radgen.data.images import decode_image

    buffer = io.BytesIO()
    try:
        dataset.save_as(buffer, enforce_file_format=False)  # pydicom >= 3
    except TypeError:
        dataset.save_as(buffer, write_like_original=True)  # pydicom 2.x
    # the .dcm name makes decode_image treat preamble-less bytes as DICOM
    return decode_image(buffer.getvalue(), f"{name}.dcm" if not name.endswith(".dcm") else name, colour=colour)


class ReportPipeline:
    """Call it on one input (returns one row) or a list (returns a list of rows), like HF `pipeline()`."""

    def __init__(self, model: Any, section: str | None = None, confidence_temperature: float = 1.0, **settings: Any) -> None:
        from radgen.generate.decode import GenerationSettings

        self.model = model
        recipe_section = model.recipe.data.section
        self.section = section or (recipe_section if recipe_section in ("findings", "impression") else "findings")
        if self.section not in ("findings", "impression"):
            raise DataError(f"section must be findings or impression, got '{self.section}'")
        self.confidence_temperature = confidence_temperature
        self.settings = settings
        GenerationSettings.from_recipe(model.recipe, **settings)  # bad settings fail at load, not at the first call

    @property
    def colour(self) -> str:
        """How inputs are decoded: the recipe's data.colour, gray for a one-channel encoder."""
        from radgen.data.images import encoder_colour

        return encoder_colour(self.model.recipe.data.colour, self.model.image_transform)

    def __repr__(self) -> str:
        return f"ReportPipeline(recipe={self.model.recipe.name!r}, section={self.section!r})"

    def __call__(self, inputs: Any, batch_size: int | None = None, indication: str | Sequence[str | None] | None = None,
                 lateral: Any = None, **settings: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Draft reports; settings override the recipe's generate section (num_beams, max_new_tokens, ...).

        `indication`: the study's clinical indication ("chest pain"), for models that read one
        (radgen-small does: it shapes the wording, the findings come from the image); one text, or
        one per input. `lateral`: the study's lateral view (same kinds as `inputs`; None for none),
        which radgen-small's finding head reads next to the frontal image; one, or one per input."""
        single = not isinstance(inputs, (list, tuple))
        items: Sequence[Any] = [inputs] if single else list(inputs)
        rows = self.generate(items, batch_size=batch_size, indications=_per_item(indication, len(items), single, "indication"),
                             laterals=_per_item(lateral, len(items), single, "lateral"), **settings)
        return rows[0] if single else rows

    def generate(self, items: Sequence[Any], batch_size: int | None = None, indications: Sequence[str | None] | None = None,
                 laterals: Sequence[Any] | None = None, lanes: int | None = None, **settings: Any) -> list[dict[str, Any]]:
        import torch

        from radgen.data.dataset import stacked_laterals
        from radgen.generate.decode import GenerationSettings, prediction_row
        from radgen.generate.lanes import model_lanes, run_in_lanes

        for given, what in ((indications, "indications"), (laterals, "laterals")):
            if given is not None and len(given) != len(items):
                raise DataError(f"{what}: {len(given)} given for {len(items)} inputs; give one per input (None where there is none)")
        merged = {**self.settings, **settings}
        if batch_size is not None:
            merged["batch_size"] = batch_size
        options = GenerationSettings.from_recipe(self.model.recipe, **merged)
        names = [str(item) if isinstance(item, (str, os.PathLike)) else f"input {index}" for index, item in enumerate(items)]
        colour = self.colour
        rows: list[dict[str, Any]] = []
        self.model.eval()

        def decode(chunk: range) -> list[dict[str, Any]]:
            pixels = torch.stack([self.model.image_transform(to_image(items[i], names[i], colour)) for i in chunk])
            extra: dict[str, Any] = {}
            if indications is not None:
                extra["contexts"] = [indications[i] for i in chunk]
            if laterals is not None:
                extra.update(stacked_laterals([self.model.image_transform(to_image(laterals[i], f"lateral of {names[i]}", colour))
                                               if laterals[i] is not None else None for i in chunk], pixels[0]))
            reports = self.model.generate(pixel_values=pixels, **extra, **options.generate_kwargs())
            return [prediction_row(self.model, names[i], report, self.section, self.confidence_temperature)
                    for i, report in zip(chunk, reports)]

        chunks = [range(start, min(len(items), start + options.batch_size)) for start in range(0, len(items), options.batch_size)]
        # batches side by side on a CPU, as `radgen generate` (radgen.generate.lanes); sampling one at a time
        lanes = model_lanes(self.model, len(chunks), lanes, sampling=bool(options.do_sample))
        for chunk_rows in run_in_lanes(decode, chunks, lanes, count=len(chunks)):
            rows.extend(chunk_rows)
        return rows


def _per_item(value: Any, count: int, single: bool, name: str) -> list[Any] | None:
    """A per-input list from one value (applied to every input) or a list (one per input)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and not single:
        return list(value)
    if single or isinstance(value, str):
        return [value] * count
    raise DataError(f"{name}: give one value for every input or a list with one per input")


def load(model: str | os.PathLike | None = "radgen-small", device: str | None = None, dtype: str = "auto",
         quiet: bool = True, **settings: Any) -> ReportPipeline:
    """Load a model for drafting reports: `radgen.load("radgen-small")`, `radgen.load("runs/iu")`.

    device: cpu, cuda, ... (default: cuda if available). dtype: as `radgen generate --dtype`.
    quiet: hide third-party progress bars and known warnings (radgen.quiet). settings: generation
    defaults for every call (num_beams, max_new_tokens, section, confidence_temperature, ...).
    """
    import torch

    from radgen.generate.decode import load_model

    if quiet:
        from radgen.quiet import quiet_third_party

        quiet_third_party()
    folder = resolve_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return ReportPipeline(load_model(folder, device=device, dtype=dtype), **settings)
