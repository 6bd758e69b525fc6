"""Image decoding (PNG, JPEG, 16-bit PNG, DICOM), stitching and the model input transform.

Every radiograph becomes an 8-bit grayscale PIL image (mode "L") before anything else sees it, so
encoders, the feature cache and the web page all start from the same pixels:

* 8-bit PNG/JPEG: converted to "L" (colour is dropped; radiographs are grayscale).
* 16-bit PNG: stretched min..max onto 0..255 (per image; many 16-bit PNGs only use 12 bits, so a
  fixed /257 would leave them dark).
* DICOM (pydicom): modality LUT (RescaleSlope/RescaleIntercept), then the VOI transform — a VOI LUT
  sequence if present, else the first WindowCenter/WindowWidth pair, else min..max — then
  MONOCHROME1 images are inverted so bone is always bright.

`ImageTransform` turns such an image into the tensor an encoder wants; size/mean/std come from the
encoder's processor config and are passed in (the data layer knows nothing of models).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from radgen.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _is_dicom(data: bytes, path: str | os.PathLike) -> bool:
    # DICOM Part 10 files carry "DICM" after a 128-byte preamble; the suffix catches raw datasets.
    return data[128:132] == b"DICM" or str(path).lower().endswith(DICOM_SUFFIXES)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI windowing (PS3.3 C.11.2.1.2.1) straight onto 0..255.

    Written out rather than calling pydicom's `apply_windowing`, which maps onto the stored bit
    range (e.g. 0..4095) and would need a second rescale whose bounds depend on header fields.
    """
    values = values.astype(np.float64)
    width = max(float(width), 1.0)
    scaled = ((values - (center - 0.5)) / (width - 1.0) + 0.5) if width > 1 else (values > center - 0.5).astype(np.float64)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _first_value(value) -> float:
    # WindowCenter/Width may be multi-valued (several presets); the first is the default view.
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        value = value[0]
    return float(value)


def _decode_dicom(data: bytes, path: str | os.PathLike) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err}); re-export it or remove it from the manifest") from None
    # force=True (needed for raw datasets without the Part-10 header) "parses" any bytes into
    # bogus elements; without the DICM magic, insist on at least one tag every image has.
    if data[128:132] != b"DICM" and not any(name in ds for name in ("SOPClassUID", "Modality", "Rows", "PixelData")):
        raise DataError(f"{path}: not a readable DICOM file (no DICOM header or image tags); re-export it or remove it from the manifest")
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM has no PixelData (e.g. a structured report or header-only file); remove it from the manifest")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises several types for compressed syntaxes and bad lengths
        raise DataError(
            f"{path}: cannot decode DICOM pixels ({type(err).__name__}: {err}); "
            "for compressed transfer syntaxes install pylibjpeg or gdcm, else re-export the file"
        ) from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: the first frame is the radiograph
    elif pixels.ndim == 3:
        # Colour DICOM (rare for radiographs): luminance like PIL's "L" conversion.
        pixels = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        # A LUT is indexed by integer values; pydicom warns (and may mis-index) on float input.
        gray = _stretch_to_uint8(apply_voi_lut(np.rint(values).astype(np.int64), ds, prefer_lut=True))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        gray = apply_window(values, _first_value(ds.WindowCenter), _first_value(ds.WindowWidth))
    else:
        gray = _stretch_to_uint8(values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; invert so every image reads the same way
    return Image.fromarray(gray, mode="L")


def _decode_raster(data: bytes, path: str | os.PathLike) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # PIL decodes lazily; force it so truncated files fail here, with the path
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unsupported image ({err}); re-export it as PNG/JPEG/DICOM or remove it") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_stretch_to_uint8(np.asarray(image)), mode="L")
    if image.mode == "L":
        return image
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA").convert("RGB")
    return image.convert("L")


def read_image_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the manifest path or the dataset root") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image; fix the image path in the manifest") from None


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>") -> Image.Image:
    """Decode image bytes (PNG/JPEG/16-bit PNG/DICOM) into an 8-bit grayscale PIL image."""
    if not data:
        raise DataError(f"{path}: image file is empty; re-export it or remove it from the manifest")
    return _decode_dicom(data, path) if _is_dicom(data, path) else _decode_raster(data, path)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load a radiograph as an 8-bit grayscale ("L") PIL image; DataError on missing/corrupt files."""
    return decode_image(read_image_bytes(path), path)


def stitch_images(images: Sequence[Image.Image], max_images: int = 4) -> Image.Image:
    """Place up to `max_images` images side by side (left to right, in order).

    Images are scaled to the smallest height among them (keeping aspect ratio) so nothing is
    up-sampled; this is how seed 002 feeds several views of a study to a one-image encoder.
    """
    images = list(images)[:max_images]
    if not images:
        raise DataError("stitch_images got no images; a study needs at least one image to stitch")
    if len(images) == 1:
        return images[0]
    mode = "L" if all(image.mode == "L" for image in images) else "RGB"
    height = min(image.height for image in images)
    resized = [
        (image if image.height == height else image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.BICUBIC)).convert(mode)
        for image in images
    ]
    canvas = Image.new(mode, (sum(image.width for image in resized), height))
    offset = 0
    for image in resized:
        canvas.paste(image, (offset, 0))
        offset += image.width
    return canvas


class ImageTransform:
    """PIL image → normalised FloatTensor (channels, size, size).

    resize="squash" resizes straight to size×size (aspect ratio not kept, nothing cut off: a
    radiograph's edges hold costophrenic angles); "shortest_edge_crop" scales the shorter side to
    `size` and center-crops, as most HF image processors do. A grayscale image is repeated over 3
    channels for RGB encoders. mean/std have one value per channel (or one value for all).
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channels: int = 3,
        resize: str = "squash",
        interpolation: str = "bicubic",
    ) -> None:
        if resize not in ("squash", "shortest_edge_crop"):
            raise DataError(f"unknown resize mode {resize!r}; use 'squash' or 'shortest_edge_crop'")
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        if interpolation not in _RESAMPLING:
            raise DataError(f"unknown interpolation {interpolation!r}; use one of {', '.join(_RESAMPLING)}")
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"mean/std need {channels} values (one per channel), got {len(mean)}/{len(std)}")
        if any(s == 0 for s in std):
            raise DataError("image std must be non-zero")
        self.size, self.channels, self.resize, self.interpolation = int(size), channels, resize, interpolation
        self.mean, self.std = mean, std

    def __repr__(self) -> str:
        return (
            f"ImageTransform(size={self.size}, mean={self.mean}, std={self.std}, channels={self.channels}, "
            f"resize={self.resize!r}, interpolation={self.interpolation!r})"
        )

    def _resize(self, image: Image.Image) -> Image.Image:
        resample = _RESAMPLING[self.interpolation]
        if self.resize == "squash":
            return image.resize((self.size, self.size), resample)
        scale = self.size / min(image.width, image.height)
        width, height = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
        image = image.resize((width, height), resample)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        # Grayscale is resized once and broadcast over the channels (3x less resize work than
        # converting to RGB first); normalisation runs in numpy, avoiding torch's per-op overhead
        # inside DataLoader workers.
        gray = image.mode == "L" or self.channels == 1
        image = image.convert("L") if gray else image.convert("RGB")
        array = np.asarray(self._resize(image), dtype=np.float32) * np.float32(1.0 / 255.0)
        array = array[None] if gray else array.transpose(2, 0, 1)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        scale = np.asarray([1.0 / s for s in self.std], dtype=np.float32)[:, None, None]
        return torch.from_numpy(np.ascontiguousarray((array - mean) * scale))
