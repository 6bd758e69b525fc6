"""A tiny radgen-small model saved once per test session (random weights, ~1 MB) + test images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

CARD = {
    "trained_on": "nothing: random weights built by the test suite (tiny size)",
    "intended_use": "tests only",
}


def tiny_model_dir(tmp_path_factory) -> Path:
    """Build, save and reuse (within the session) a tiny radgen-small model folder with a model card."""
    directory = tmp_path_factory.getbasetemp() / "tiny_radgen_model"
    if not (directory / "radgen_config.yaml").is_file():
        import torch

        from radgen.config import load_recipe
        from radgen.models import build_model

        torch.manual_seed(0)
        recipe = load_recipe("radgen-small", size="tiny", overrides=["generate.num_beams=1", "generate.max_new_tokens=12"])
        build_model(recipe).save_pretrained(str(directory))
        (directory / "model_card.json").write_text(json.dumps(CARD))
    return directory


def radiograph(size: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    lungs = 140 + 60 * np.exp(-(((x - size * 0.3) / (size * 0.15)) ** 2 + ((y - size * 0.5) / (size * 0.3)) ** 2))
    pixels = np.clip(lungs + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def png_bytes(image: Image.Image | None = None) -> bytes:
    buffer = io.BytesIO()
    (image or radiograph()).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    radiograph().convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def dicom_bytes(patient_name: str = "Doe^Jane", with_pixels: bool = True) -> bytes:
    """A DICOM Part 10 file (Explicit VR Little Endian) with patient header fields."""
    import pydicom

    from tests.oneline_fixtures import dicom_dataset

    ds = dicom_dataset(np.asarray(radiograph()), with_pixels=with_pixels)
    ds.PatientName = patient_name
    ds.PatientID = "MRN-123456"
    ds.PatientBirthDate = "19700101"
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
