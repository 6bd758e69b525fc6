"""Image decoding (PNG, JPEG, 16-bit PNG, DICOM), stitching and the model input transform.

Every image becomes an 8-bit PIL image before anything else sees it, so encoders, the feature cache
and the web page all start from the same pixels. By default (`colour="gray"`) that is grayscale
(mode "L"); `colour="keep"` (recipe `data.colour: keep`) keeps real colour as "RGB", for
datasets whose figures carry meaning in colour (ROCO, seed 001: Doppler ultrasound, PET overlays)
and encoders that take RGB:

* 8-bit PNG/JPEG: "gray" converts to "L" (colour is dropped; radiographs are grayscale); "keep"
  turns RGB/RGBA/P/CMYK/YCbCr into "RGB", except that an image whose three channels are equal
  everywhere (a radiograph saved as RGB) becomes "L" (same tensor, a third of the memory).
* 16-bit PNG: stretched min..max onto 0..255 (per image; many 16-bit PNGs only use 12 bits, so a
  fixed /257 would leave them dark).
* DICOM (pydicom): modality LUT (RescaleSlope/RescaleIntercept), then the VOI transform — a VOI LUT
  sequence if present, else the first WindowCenter/WindowWidth pair, else min..max — then
  MONOCHROME1 images are inverted so bone is always bright. Only the first frame is decoded.
  Colour DICOM (RGB/YBR, e.g. ultrasound) is reduced to luminance, or kept as "RGB" with "keep".

Every decoder checks the size a file declares against one pixel budget (`MAX_PIXELS`) before
allocating pixels: PIL's header for PNG/JPEG, Rows x Columns for DICOM, plus the codestream header
of JPEG-compressed DICOM and a bounded trial inflation of deflated DICOM (both can claim more than
their header). DICOM's float intermediates are computed in row blocks, so decoding peaks near
3 bytes per pixel of the budget rather than 30.

`ImageTransform` turns such an image into the tensor an encoder wants; size/mean/std come from the
encoder's processor config and are passed in (the data layer knows nothing of models).
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from radgen.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
# One budget for every decoder: 40 Mpx is ~2.5x the largest chest detector (4300x3500); past it a
# file is refused from its header, before pixels are allocated.
MAX_PIXELS = 40_000_000
_BLOCK_PIXELS = 1 << 21  # row blocks of ~2 Mpx: float64 intermediates stay ~16 MB each
_DICOM_HEADER_ALLOWANCE = 16 << 20
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
# What decoding does with colour: "gray" (every image becomes "L"; chest X-ray recipes) or "keep"
# (real colour stays "RGB"; recipe data.colour, see COLOUR_MODES users in the dataset and pipeline)
COLOUR_MODES = ("gray", "keep")
_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _is_dicom(data: bytes, path: str | os.PathLike) -> bool:
    # DICOM Part 10 files carry "DICM" after a 128-byte preamble; the suffix catches raw datasets.
    return data[128:132] == b"DICM" or str(path).lower().endswith(DICOM_SUFFIXES)


def check_pixel_budget(width: int, height: int, path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> None:
    """DataError when an image's declared size exceeds the pixel budget (checked before decoding)."""
    if width * height > max_pixels:
        raise DataError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}; "
            "downscale it (radiographs need a few thousand pixels per side at most)"
        )


def _row_blocks(height: int, width: int) -> Iterator[slice]:
    step = max(1, _BLOCK_PIXELS // max(1, width))
    for start in range(0, height, step):
        yield slice(start, start + step)


def _stretch_blocks(values: Callable[[slice], np.ndarray], height: int, width: int) -> np.ndarray:
    """min..max onto 0..255 over values(rows) block by block: two passes, float64 only per block."""
    blocks = list(_row_blocks(height, width))
    low = min(float(np.min(values(block))) for block in blocks)
    high = max(float(np.max(values(block))) for block in blocks)
    out = np.zeros((height, width), dtype=np.uint8)
    if high > low:
        for block in blocks:
            out[block] = np.round((np.asarray(values(block), dtype=np.float64) - low) / (high - low) * 255.0)
    return out


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    return _stretch_blocks(lambda block: values[block].astype(np.float64), values.shape[0], values.shape[1])


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


def _unreadable_dicom(path: str | os.PathLike, reason: str) -> DataError:
    return DataError(f"{path}: not a readable DICOM file ({reason}); re-export it or remove it from the manifest")


def _check_deflated_size(data: bytes, path: str | os.PathLike, max_pixels: int) -> None:
    """Deflated transfer syntax: pydicom inflates the whole dataset in memory, so a few hundred KB can
    claim gigabytes. Inflate in bounded steps first, keeping nothing, and refuse past the budget."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    stream = io.BytesIO(data)
    try:
        read_preamble(stream, True)
        meta = _read_file_meta_info(stream)
    except Exception:  # noqa: BLE001 - no readable file meta: dcmread below reports the file as unreadable
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    limit = max_pixels * 2 + _DICOM_HEADER_ALLOWANCE  # 16-bit pixels at the budget plus header elements
    inflater, pending, total = zlib.decompressobj(-zlib.MAX_WBITS), data[stream.tell():], 0
    try:
        # until the stream ends, not until the input is read: the inflater can still hold output
        # it was not allowed to return (max_length), which would otherwise go uncounted
        while total <= limit and not inflater.eof:
            chunk = inflater.decompress(pending, 1 << 20)
            pending = inflater.unconsumed_tail
            total += len(chunk)
            if not chunk and not pending:  # truncated stream: nothing more will come
                break
    except zlib.error as err:
        raise _unreadable_dicom(path, f"deflated data is corrupt: {err}") from None
    if total > limit:
        raise DataError(f"{path}: deflated DICOM expands past {limit:,} bytes, more than an image within the "
                        f"limit of {max_pixels:,} pixels needs; downscale it or send it uncompressed")


def _check_codestream_size(ds, rows: int, columns: int, path: str | os.PathLike, max_pixels: int) -> None:
    """A JPEG / JPEG 2000 frame is decoded at its own size, whatever Rows/Columns say: read its header."""
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = Image.open(io.BytesIO(frame), formats=("JPEG", "JPEG2000")).size
    except Image.DecompressionBombError:
        raise DataError(f"{path}: compressed DICOM frame declares more than {max_pixels:,} pixels; downscale it") from None
    except Exception:  # noqa: BLE001 - not a JPEG family codestream (RLE, JPEG-LS): the decoder sizes by the header
        return
    check_pixel_budget(size[0], size[1], path, max_pixels)
    if size != (columns, rows):
        raise DataError(f"{path}: compressed pixel data is {size[0]}x{size[1]} but the header says {columns}x{rows}; re-export the file")


def check_colour(colour: str) -> str:
    """`colour` if it is one of COLOUR_MODES, else a DataError."""
    if colour not in COLOUR_MODES:
        raise DataError(f"unknown colour mode {colour!r}; use one of {', '.join(COLOUR_MODES)}")
    return colour


def encoder_colour(colour: str, image_transform: object) -> str:
    """The colour mode to decode with for an encoder: "gray" whenever its transform takes one channel
    (a colour decode would only be converted back, and keyed apart from identical gray features)."""
    check_colour(colour)
    return "gray" if getattr(image_transform, "channels", 3) == 1 else colour


def _gray_if_equal(image: Image.Image) -> Image.Image:
    """An "RGB" image whose three channels are equal everywhere, as "L"; else the image itself.

    Exact equality only: ImageTransform repeats "L" over three channels, so the encoder sees the
    identical tensor, while the decoded-image cache holds a third of the bytes and the resize does a
    third of the work (many ROCO figures are grayscale images saved as 3-channel JPEG, which
    usually decode with R=G=B). Any tolerance would be a guess that could erase a faint colour overlay, so near-gray
    stays "RGB". Checked in row blocks, stopping at the first colour block, so the check never
    holds a second copy of the whole image.
    """
    for block in _row_blocks(image.height, image.width):
        rows = np.asarray(image.crop((0, block.start, image.width, min(block.stop, image.height))))
        if not (np.array_equal(rows[..., 0], rows[..., 1]) and np.array_equal(rows[..., 0], rows[..., 2])):
            return image
    return image.getchannel(0)


def _dicom_colour(pixels: np.ndarray, ds) -> Image.Image:
    """A colour DICOM frame (SamplesPerPixel 3; pydicom already converts YBR to RGB) as "RGB".

    The modality LUT and VOI windowing are defined for grayscale only (PS3.3 C.11), so colour
    samples are shown as stored: 8-bit as is, wider samples shifted down to their top 8 bits.
    """
    bits = int(ds.BitsStored)  # pydicom's decoder needed it to get here
    rgb = pixels[..., :3]
    if rgb.dtype != np.uint8:
        rgb = (rgb.astype(np.uint32) >> max(0, bits - 8)).clip(0, 255).astype(np.uint8) if bits > 8 else rgb.astype(np.uint8)
    return _gray_if_equal(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"))


def _dicom_to_gray(pixels: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, VOI (LUT, window or min..max) onto uint8, in row blocks: the float64
    intermediates never exist for the whole image (a 40 Mpx DICOM would need 320 MB for each)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    height, width = pixels.shape[:2]

    def modality(block: slice) -> np.ndarray:
        part = pixels[block]
        if part.ndim == 3:
            # Colour DICOM (rare for radiographs): luminance like PIL's "L" conversion.
            part = part[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.asarray(apply_modality_lut(part, ds), dtype=np.float64)

    if "VOILUTSequence" in ds:
        # A LUT is indexed by integer values; pydicom warns (and may mis-index) on float input.
        return _stretch_blocks(lambda block: apply_voi_lut(np.rint(modality(block)).astype(np.int64), ds, prefer_lut=True), height, width)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, window_width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
        gray = np.empty((height, width), dtype=np.uint8)
        for block in _row_blocks(height, width):
            gray[block] = apply_window(modality(block), center, window_width)
        return gray
    return _stretch_blocks(modality, height, width)


def _decode_dicom(data: bytes, path: str | os.PathLike, max_pixels: int = MAX_PIXELS, colour: str = "gray") -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    _check_deflated_size(data, path, max_pixels)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, OSError, zlib.error) as err:
        raise _unreadable_dicom(path, _clean(err)) from None
    # force=True (needed for raw datasets without the Part-10 header) "parses" any bytes into
    # bogus elements; without the DICM magic, insist on at least one tag every image has.
    if data[128:132] != b"DICM" and not any(name in ds for name in ("SOPClassUID", "Modality", "Rows", "PixelData")):
        raise DataError(f"{path}: not a readable DICOM file (no DICOM header or image tags); re-export it or remove it from the manifest")
    if "TransferSyntaxUID" not in ds.file_meta:
        # A raw dataset (no Part-10 header, as old archives hold): pydicom read it with the encoding it
        # detected but decodes pixels only under a named transfer syntax. Raw datasets are never compressed.
        implicit_vr, little_endian = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit_vr
                                          else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian)
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM has no PixelData (e.g. a structured report or header-only file); remove it from the manifest")
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except (TypeError, ValueError):
        rows = columns = 0
    if rows <= 0 or columns <= 0:
        raise DataError(f"{path}: DICOM has PixelData but no valid Rows/Columns; re-export the file")
    # Before any pixel is decoded: the header decides how much a decoder allocates.
    check_pixel_budget(columns, rows, path, max_pixels)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        _check_codestream_size(ds, rows, columns, path, max_pixels)
    try:
        pixels = pixel_array(ds, index=0)  # the first frame only: it is the radiograph
    except Exception as err:  # pydicom raises several types for compressed syntaxes and bad lengths
        raise DataError(
            f"{path}: cannot decode DICOM pixels ({type(err).__name__}: {_clean(err)}); "
            "for compressed transfer syntaxes install pylibjpeg or gdcm, else re-export the file"
        ) from None
    if colour == "keep" and pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) >= 3:
        return _dicom_colour(pixels, ds)
    gray = _dicom_to_gray(pixels, ds)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; invert so every image reads the same way
    return Image.fromarray(gray, mode="L")


def _clean(err: BaseException) -> str:
    """An exception's text on one line, without object addresses (PIL names '<_io.BytesIO object at 0x7f..>')."""
    text = " ".join(str(err).split())
    return _ADDRESS.sub("<data>", text)[:300] or type(err).__name__


def _decode_raster(data: bytes, path: str | os.PathLike, max_pixels: int = MAX_PIXELS, colour: str = "gray") -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL warns past its own limit; ours (checked below, before decoding) is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image declares more than {max_pixels:,} pixels, over the limit; "
                        "downscale it (radiographs need a few thousand pixels per side at most)") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: corrupt or unsupported image (not a recognised image format); re-export it as PNG/JPEG/DICOM or remove it") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unsupported image ({_clean(err)}); re-export it as PNG/JPEG/DICOM or remove it") from None
    check_pixel_budget(image.width, image.height, path, max_pixels)
    try:
        image.load()  # PIL decodes lazily; force it so truncated files fail here, with the path
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unsupported image ({_clean(err)}); re-export it as PNG/JPEG/DICOM or remove it") from None
    return to_8bit(image, colour)


def to_8bit(image: Image.Image, colour: str = "gray") -> Image.Image:
    """A decoded PIL image as 8-bit "L", or with colour="keep" as "RGB" when it really is colour.

    16-bit and float images (16-bit PNG/TIFF) are stretched min..max onto 0..255, like a DICOM
    without a window. Other modes (P, CMYK, YCbCr, LA, RGBA...) are converted by PIL; alpha is dropped,
    not composited, so the colour under it is kept. A gray palette or R=G=B pixels become "L".
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_stretch_to_uint8(np.asarray(image)), mode="L")
    if image.mode == "L":
        return image
    if colour == "keep":
        return _gray_if_equal(image.convert("RGB"))
    return image.convert("L")


def read_image_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the manifest path or the dataset root") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image; fix the image path in the manifest") from None


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = MAX_PIXELS, colour: str = "gray") -> Image.Image:
    """Decode image bytes (PNG/JPEG/16-bit PNG/DICOM) into an 8-bit PIL image.

    colour="gray": always "L". colour="keep": "RGB" for images that really are colour, "L" for
    the rest (grayscale files, 16-bit PNG, monochrome DICOM, RGB files with R=G=B everywhere).
    Every decoder checks the declared size against `max_pixels` before allocating pixels
    (DataError past it), so a small compressed file cannot claim gigabytes.
    """
    check_colour(colour)
    if not data:
        raise DataError(f"{path}: image file is empty; re-export it or remove it from the manifest")
    if _is_dicom(data, path):
        return _decode_dicom(data, path, max_pixels, colour)
    return _decode_raster(data, path, max_pixels, colour)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, colour: str = "gray") -> Image.Image:
    """Load an image as 8-bit "L" (or "RGB" for real colour with colour="keep"); DataError on missing/corrupt/oversized files."""
    return decode_image(read_image_bytes(path), path, max_pixels, colour)


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


RESIZE_MODES = ("squash", "shortest_edge_crop", "pad")


def pad_placement(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """"pad" mode: (new_width, new_height, left, top) of a width×height image inside the size×size
    square (longer side = size, centred as LLaVA's expand2square centres it)."""
    scale = size / max(width, height)
    new_width, new_height = max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))
    return new_width, new_height, (size - new_width) // 2, (size - new_height) // 2


class ImageTransform:
    """PIL image → normalised FloatTensor (channels, size, size).

    resize="squash" resizes straight to size×size (aspect ratio not kept, nothing cut off: a
    radiograph's edges hold costophrenic angles); "shortest_edge_crop" scales the shorter side to
    `size` and center-crops, as most HF image processors do; "pad" scales the longer side to `size`
    and centres the image on a square filled with the mean colour (LLaVA-1.5's
    `image_aspect_ratio: pad`, expand2square): aspect ratio kept and nothing cut off, which a
    stitch of several views needs (a centre crop of a 4-view stitch keeps only views 2 and 3). A grayscale image is repeated over 3
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
        if resize not in RESIZE_MODES:
            raise DataError(f"unknown resize mode {resize!r}; use one of {', '.join(RESIZE_MODES)}")
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
        if self.resize == "pad":  # the square's fill is added after normalisation (__call__)
            new_width, new_height, _, _ = pad_placement(image.width, image.height, self.size)
            return image.resize((new_width, new_height), resample)
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
        array = (array - mean) * scale
        if self.resize == "pad":
            # LLaVA fills with the processor's mean colour, which normalises to exactly 0 in every
            # channel; filling after normalisation keeps the grayscale fast path (one resize).
            _, _, left, top = pad_placement(image.width, image.height, self.size)
            square = np.zeros((array.shape[0], self.size, self.size), dtype=np.float32)
            square[:, top: top + array.shape[1], left: left + array.shape[2]] = array
            array = square
        return torch.from_numpy(np.ascontiguousarray(array))
