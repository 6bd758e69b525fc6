"""Details of radgen.data.images that the complete mutation run (scripts/mutation.sh images) showed
unguarded: the deflate check's step size and its broken-stream exits, compressed frames whose header
lies, which DICOM-looking bytes are DICOM, windowing attributes, colour samples and gray detection.
Expected values are worked out from the DICOM rules in the comments, not taken from radgen.
"""

from __future__ import annotations

import io
import struct
import types
import zlib

import numpy as np
import pytest
from PIL import Image

import radgen.data.images as images
from radgen.data.images import decode_image
from radgen.errors import DataError
from tests.data import bombs
from tests.data.dicom_files import colour_dicom

# ----------------------------------------------------------------------------- deflated DICOM


class _RecordingInflater:
    """zlib's inflater, recording the size of every piece of output it returns."""

    def __init__(self, inner, sizes: list[int]):
        self._inner, self._sizes = inner, sizes

    def decompress(self, data, max_length=0):
        out = self._inner.decompress(data, max_length)
        self._sizes.append(len(out))
        return out

    def __getattr__(self, name):  # unconsumed_tail, eof
        return getattr(self._inner, name)


def test_the_deflate_check_holds_at_most_1_mib_of_output_at_a_time(monkeypatch):
    sizes: list[int] = []
    fake_zlib = types.SimpleNamespace(**{name: getattr(zlib, name) for name in ("MAX_WBITS", "error")})
    fake_zlib.decompressobj = lambda *args: _RecordingInflater(zlib.decompressobj(*args), sizes)
    monkeypatch.setattr(images, "zlib", fake_zlib)
    with pytest.raises(DataError, match="deflated DICOM expands past"):
        decode_image(bombs.dicom_deflate_bomb(rows=2048, columns=4352), "upload", max_pixels=1000)
    assert len(sizes) > 16 and max(sizes) == 1 << 20


def _deflated(rows: int = 40, columns: int = 30) -> tuple[bytes, int]:
    data = bombs.dicom_deflate_bomb(rows=rows, columns=columns)
    return data, 132 + 12 + struct.unpack("<I", data[140:144])[0]  # where the deflated dataset starts


def test_a_truncated_deflated_dicom_is_unreadable_not_a_hang():
    data, start = _deflated()
    with pytest.raises(DataError, match=r"^cut\.dcm: not a readable DICOM file"):
        decode_image(data[: start + (len(data) - start) // 2], "cut.dcm")


def test_corrupt_deflated_data_is_named_as_such():
    data, start = _deflated()
    with pytest.raises(DataError, match=r"^bad\.dcm: not a readable DICOM file \(deflated data is corrupt: .*\); re-export it"):
        decode_image(data[:start] + b"\xff" * 64, "bad.dcm")


def test_the_deflate_refusal_is_one_line_naming_the_file_and_the_fix():
    with pytest.raises(DataError) as refused:
        decode_image(bombs.dicom_deflate_bomb(rows=2048, columns=4352), "upload.dcm", max_pixels=1000)
    message = str(refused.value)
    assert message.startswith("upload.dcm: deflated DICOM expands past 16,779,216 bytes")  # 2 x 1000 + 16 MiB
    assert message.endswith("within the limit of 1,000 pixels needs; downscale it or send it uncompressed")


# ------------------------------------------------------------------ compressed frames that lie


def test_a_jpeg_frame_larger_than_its_header_is_refused_before_decoding():
    with pytest.raises(DataError, match=r"^up\.dcm: compressed pixel data is 80x100 but the header says 64x64; re-export the file$"):
        decode_image(bombs.dicom_jpeg_bomb(rows=100, columns=80, header=(64, 64)), "up.dcm")


def test_a_jpeg_frame_over_the_budget_is_refused_by_its_own_size():
    # header 64 x 64 (within budget), codestream 300 x 200: the budget check reads the codestream
    with pytest.raises(DataError, match=r"image is 200x300 = 60,000 pixels, over the limit of 50,000"):
        decode_image(bombs.dicom_jpeg_bomb(rows=300, columns=200, header=(64, 64)), "up.dcm", max_pixels=50_000)


def test_a_jpeg_frame_past_pils_own_bomb_limit_is_one_line():
    # 14000^2 = 196 Mpx is past twice PIL's MAX_IMAGE_PIXELS: PIL refuses to open it at all
    with pytest.raises(DataError, match=r"^up\.dcm: compressed DICOM frame declares more than 40,000,000 pixels; downscale it$"):
        decode_image(bombs.dicom_jpeg_bomb(rows=14000, columns=14000, header=(64, 64)), "up.dcm")


# ------------------------------------------------------------- which bytes are read as DICOM


def _raw_dataset(**elements) -> bytes:
    """A dataset without preamble, 'DICM' or file meta (implicit VR little endian), as old archives hold."""
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    for name, value in elements.items():
        if name == "PixelData":
            ds.add_new(0x7FE00010, "OB", value)  # no BitsAllocated to resolve OB/OW from
        else:
            setattr(ds, name, value)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.mark.parametrize("element", [{"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1"}, {"Modality": "DX"}, {"Rows": 4}])
def test_a_headerless_dataset_with_an_image_tag_is_read_as_dicom(element):
    # accepted as DICOM (one of the tags every image has), then refused for what it lacks
    with pytest.raises(DataError, match=r"^old\.dcm: DICOM has no PixelData"):
        decode_image(_raw_dataset(**element), "old.dcm")


def test_a_headerless_dataset_with_only_pixels_is_read_as_dicom():
    with pytest.raises(DataError, match=r"^old\.dcm: DICOM has PixelData but no valid Rows/Columns"):
        decode_image(_raw_dataset(PixelData=b"\0" * 16), "old.dcm")


def test_a_headerless_dataset_without_image_tags_is_not_dicom():
    with pytest.raises(DataError, match=r"^old\.dcm: not a readable DICOM file \(no DICOM header or image tags\)"):
        decode_image(_raw_dataset(PatientID="x"), "old.dcm")


def test_a_part10_file_needs_no_image_tag_to_be_read_as_dicom():
    # 'DICM' at byte 128 is enough to be DICOM; then it is refused for having no pixels
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientID = "x"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(DataError, match=r"^sr\.dcm: DICOM has no PixelData"):
        decode_image(buffer.getvalue(), "sr.dcm")


# ------------------------------------------------------------------------------- windowing


def _gray_dicom(pixels, **attributes) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.Modality = meta.MediaStorageSOPClassUID, "DX"
    pixels = np.asarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_window_centre_without_a_width_falls_back_to_min_max():
    # (0, 100, 200, 400) stretched min..max onto 0..255: 0, 64, 128, 255 (rounded)
    out = decode_image(_gray_dicom([[0, 100], [200, 400]], WindowCenter=100), "c.dcm")
    assert np.asarray(out).tolist() == [[0, 64], [128, 255]]


def test_a_voi_lut_wins_over_a_window():
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 0, 8])  # 4 entries from input value 0, 8 bits
    lut.add_new(0x00283006, "US", [0, 10, 20, 255])
    # the window alone (centre 1, width 2: a threshold at 1) would give 0, 0/255, 255, 255
    out = decode_image(_gray_dicom([[0, 1], [2, 3]], VOILUTSequence=[lut], WindowCenter=1, WindowWidth=2), "lut.dcm")
    assert np.asarray(out).tolist() == [[0, 10], [20, 255]]


# ------------------------------------------------------------------------ colour samples


@pytest.mark.parametrize("bits, stored, expected", [
    (9, [[0, 1, 2, 511]], [0, 0, 1, 255]),  # 9 bits: shifted down by 1
    (16, [[0, 255, 256, 65535]], [0, 0, 1, 255]),  # 16 bits: by 8
])
def test_wide_colour_samples_keep_their_top_8_bits(tmp_path, bits, stored, expected):
    pixels = np.zeros((1, 4, 3), dtype=np.uint16)
    pixels[..., 0] = stored  # red varies, green and blue stay 0: the image is really colour
    out = decode_image(colour_dicom(tmp_path / "us.dcm", pixels, bits_stored=bits).read_bytes(), "us.dcm", colour="keep")
    assert out.mode == "RGB"
    assert np.asarray(out)[0, :, 0].tolist() == expected


@pytest.mark.parametrize("channel", [1, 2])
@pytest.mark.parametrize("where", [(0, 0), (0, 39), (29, 0)])
def test_one_channel_off_anywhere_keeps_an_image_colour(tmp_path, channel, where):
    # R = G = B except one sample of one channel: in the first or last column, first or last row
    pixels = np.full((30, 40, 3), 90, dtype=np.uint8)
    pixels[where[0], where[1], channel] = 91
    path = tmp_path / "x.png"
    Image.fromarray(pixels, mode="RGB").save(path)
    out = decode_image(path.read_bytes(), "x.png", colour="keep")
    assert out.mode == "RGB" and np.asarray(out)[where[0], where[1], channel] == 91


def test_the_deflate_check_counts_output_the_inflater_held_back():
    # When the last input bytes are consumed by a step whose output was capped at 1 MiB, the inflater
    # still holds output; the check must count it. Where that happens depends on the file's bytes (its
    # random UIDs move the step boundaries), so several builds are checked, each 2 bytes over its limit.
    for _ in range(6):
        data, start = _deflated(rows=2048, columns=4096)
        inflated = len(zlib.decompress(data[start:], -zlib.MAX_WBITS))
        budget = (inflated - (16 << 20)) // 2 - 1  # limit = 2 x budget + 16 MiB = inflated - 2
        with pytest.raises(DataError, match=rf"deflated DICOM expands past {inflated - 2:,} bytes"):
            decode_image(data, "upload", max_pixels=budget)


# ------------------------------------------------------------------ DICOM sizes and pixel errors


def _raw_image(**overrides) -> bytes:
    """A headerless 8-bit MONOCHROME2 dataset of 2 x 3 pixels; `overrides` replace or (None) drop elements."""
    elements = dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1", Rows=2, Columns=3, SamplesPerPixel=1,
                    PhotometricInterpretation="MONOCHROME2", BitsAllocated=8, BitsStored=8, HighBit=7,
                    PixelRepresentation=0, PixelData=bytes([0, 50, 100, 150, 200, 250]))
    elements.update(overrides)
    return _raw_dataset(**{k: v for k, v in elements.items() if v is not None})


@pytest.mark.parametrize("overrides", [{"Rows": None}, {"Columns": None}, {"Rows": 0}, {"Columns": 0}, {"Rows": [2, 2]}])
def test_missing_zero_or_multi_valued_rows_or_columns_are_refused(overrides):
    with pytest.raises(DataError, match=r"^old\.dcm: DICOM has PixelData but no valid Rows/Columns; re-export the file$"):
        decode_image(_raw_image(**overrides), "old.dcm")


def test_pixel_data_shorter_than_the_header_says_is_a_decoding_error():
    with pytest.raises(DataError, match=r"^short\.dcm: cannot decode DICOM pixels \(\w+: .*\); for compressed transfer "
                                        r"syntaxes install pylibjpeg or gdcm, else re-export the file$"):
        decode_image(_raw_image(Rows=20, Columns=30), "short.dcm")
def test_a_headerless_dataset_with_pixels_decodes():
    # no file meta, so no transfer syntax: read as implicit VR little endian, never as compressed
    assert np.asarray(decode_image(_raw_image(), "old.dcm")).tolist() == [[0, 51, 102], [153, 204, 255]]


def test_a_one_pixel_dicom_is_an_image():
    out = decode_image(_raw_image(Rows=1, Columns=1, PixelData=bytes([7, 0])), "dot.dcm")  # padded to even length
    assert out.size == (1, 1)




# ------------------------------------------------------------------- wide raster modes


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4"), ("F", "<f4")])
def test_wide_and_float_tiffs_are_stretched_min_to_max(tmp_path, mode, dtype):
    values = np.array([[1000, 1500], [2000, 3000]], dtype=dtype)
    image = Image.frombytes(mode, (2, 2), values.tobytes())
    path = tmp_path / "x.tif"
    image.save(path)
    assert Image.open(path).mode == mode
    # (v - 1000) / 2000 * 255, rounded: 0, 63.75, 127.5, 255
    for colour in ("gray", "keep"):
        out = decode_image(path.read_bytes(), "x.tif", colour=colour)
        assert out.mode == "L" and np.asarray(out).tolist() == [[0, 64], [128, 255]]


# ------------------------------------------------------- every refusal: one line, the file, the fix

_FIX = "re-export it as PNG/JPEG/DICOM or remove it"


def _png_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + bombs._chunk(b"IHDR", header) + bombs._chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()[:400]  # the header reads; the pixel data ends early


@pytest.mark.parametrize("data, message", [
    (b"hello, not an image", rf"^x\.png: corrupt or unsupported image \(not a recognised image format\); {_FIX}$"),
    (_png_header_only(20, 20)[:20], rf"^x\.png: corrupt or unsupported image \(.+\); {_FIX}$"),
    (_truncated_png(), rf"^x\.png: corrupt or unsupported image \(.+\); {_FIX}$"),
    (_png_header_only(14000, 14000), r"^x\.png: image declares more than 40,000,000 pixels, over the limit; downscale it "
                                     r"\(radiographs need a few thousand pixels per side at most\)$"),
    (b"", r"^x\.png: image file is empty; re-export it or remove it from the manifest$"),
])
def test_raster_refusals_name_the_file_and_the_fix(data, message):
    with pytest.raises(DataError, match=message):
        decode_image(data, "x.png")


def test_file_refusals_name_the_file_and_the_fix(tmp_path):
    from radgen.data.images import load_image, stitch_images

    with pytest.raises(DataError, match=rf"^{tmp_path / 'none.png'}: image file not found; check the manifest path or the dataset root$"):
        load_image(tmp_path / "none.png")
    with pytest.raises(DataError, match=rf"^{tmp_path}: is a directory, not an image; fix the image path in the manifest$"):
        load_image(tmp_path)
    with pytest.raises(DataError, match=r"^stitch_images got no images; a study needs at least one image to stitch$"):
        stitch_images([])


def test_quoted_decoder_errors_are_one_line_without_addresses_and_at_most_300_characters():
    from radgen.data.images import _clean

    assert _clean(OSError("cannot identify image file <_io.BytesIO object at 0x7f3a2b1c>")) == "cannot identify image file <data>"
    assert _clean(ValueError("broken\n   stream")) == "broken stream"
    assert _clean(ValueError("y" * 301)) == "y" * 300
    assert _clean(EOFError()) == "EOFError"


def test_a_jpeg_2000_frame_larger_than_its_header_is_refused_before_decoding():
    from PIL import features

    if not features.check("jpg_2000"):
        pytest.skip("this Pillow has no JPEG 2000 support")
    buffer = io.BytesIO()
    Image.new("L", (80, 100), 128).save(buffer, format="JPEG2000")
    data = bombs._dicom(64, 64, "1.2.840.10008.1.2.4.90", buffer.getvalue())  # JPEG 2000 lossless, header 64 x 64
    with pytest.raises(DataError, match=r"^j2k\.dcm: compressed pixel data is 80x100 but the header says 64x64; re-export the file$"):
        decode_image(data, "j2k.dcm")


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2"), ("I", "<i4"), ("F", "<f4")])
def test_in_memory_wide_images_are_stretched_like_files(mode, dtype):
    from radgen.data.images import to_8bit

    image = Image.frombytes(mode, (2, 2), np.array([1000, 1500, 2000, 3000], dtype=dtype).tobytes())
    out = to_8bit(image, "keep")
    assert out.mode == "L" and np.asarray(out).tolist() == [[0, 64], [128, 255]]


def test_bytes_without_a_name_are_called_bytes_in_errors():
    with pytest.raises(DataError, match=r"^<bytes>: image file is empty; re-export it or remove it from the manifest$"):
        decode_image(b"")


def test_an_unknown_colour_mode_is_one_line():
    with pytest.raises(DataError, match=r"^unknown colour mode 'rgb'; use one of gray, keep$"):
        decode_image(b"x", colour="rgb")


def test_the_deflate_check_stops_inflating_once_past_the_limit(monkeypatch):
    sizes: list[int] = []
    fake_zlib = types.SimpleNamespace(**{name: getattr(zlib, name) for name in ("MAX_WBITS", "error")})
    fake_zlib.decompressobj = lambda *args: _RecordingInflater(zlib.decompressobj(*args), sizes)
    monkeypatch.setattr(images, "zlib", fake_zlib)
    with pytest.raises(DataError, match="deflated DICOM expands past 16,779,216 bytes"):  # 2 x 1000 + 16 MiB
        decode_image(bombs.dicom_deflate_bomb(rows=2048, columns=8192), "upload", max_pixels=1000)  # 32 MiB
    assert sum(sizes) <= (16 << 20) + 2000 + (1 << 20)  # one step past the limit, not the other 15 MiB


def test_a_colour_dicom_without_bits_stored_is_a_one_line_error(tmp_path):
    import pydicom

    path = colour_dicom(tmp_path / "us.dcm", np.zeros((1, 2, 3), dtype=np.uint16), bits_stored=16)
    ds = pydicom.dcmread(path)
    del ds.BitsStored  # a required attribute (type 1): pydicom will not decode without it
    ds.save_as(path)
    with pytest.raises(DataError, match=r"^us\.dcm: cannot decode DICOM pixels \(.*Bits Stored.*\); for compressed"):
        decode_image(path.read_bytes(), "us.dcm", colour="keep")
