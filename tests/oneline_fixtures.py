"""Images and a tiny saved model for the one-line-use tests (pipeline, generate on folders, quiet runs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def radiograph_array(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    lungs = 140 + 60 * np.exp(-(((x - size * 0.3) / (size * 0.15)) ** 2 + ((y - size * 0.5) / (size * 0.3)) ** 2))
    return np.clip(lungs + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)


def dicom_dataset(pixels: np.ndarray | None = None, with_pixels: bool = True):
    """A DICOM Part 10 dataset (Explicit VR Little Endian, 12-bit MONOCHROME2)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "DX"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if with_pixels:
        values = (radiograph_array() if pixels is None else pixels).astype(np.uint16) * 16
        ds.Rows, ds.Columns = values.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = values.tobytes()
    return ds


def dicom_bytes(with_pixels: bool = True) -> bytes:
    import pydicom

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dicom_dataset(with_pixels=with_pixels), enforce_file_format=True)
    return buffer.getvalue()


def image_folder(root: Path) -> Path:
    """A folder with a PNG, a JPEG, a suffix-less DICOM in a subfolder, and four files that are not radiographs."""
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(radiograph_array(seed=1)).save(root / "a.png")
    Image.fromarray(radiograph_array(seed=2)).convert("RGB").save(root / "b.jpg")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "IM0001").write_bytes(dicom_bytes())  # PACS exports often have no suffix
    (root / "sub" / "sr.dcm").write_bytes(dicom_bytes(with_pixels=False))
    (root / "notes.txt").write_text("not an image\n")
    (root / "empty.png").write_bytes(b"")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny radgen-small (random weights, greedy, 8 new tokens) saved once per session."""
    directory = tmp_path_factory.getbasetemp() / "oneline_tiny_model"
    if not (directory / "radgen_config.yaml").is_file():
        import torch

        from radgen.config import load_recipe
        from radgen.models import build_model

        torch.manual_seed(0)
        recipe = load_recipe("radgen-small", size="tiny",
                             overrides=["generate.num_beams=1", "generate.max_new_tokens=8", "generate.no_repeat_ngram_size=3"])
        build_model(recipe).save_pretrained(str(directory))
    return directory
