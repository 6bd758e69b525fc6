"""Colour (RGB) DICOM files written for the decoding tests: ultrasound-style, 8 or up to 16 bits stored."""

from __future__ import annotations

import numpy as np


def colour_dicom(path, pixels: np.ndarray, bits_stored: int = 8):
    """Write an RGB Ultrasound Image Storage file (pixel-interleaved) holding `pixels` (H, W, 3)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "US"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8 if allocated == 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
