"""Edges of radgen.data.images that mutation testing (scripts/mutation.sh images) found unguarded.

Each test pins a behaviour users rely on: which files go to the DICOM reader, where exactly the
deflated-DICOM limit lies, and what each interpolation name means.
"""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from radgen.data.images import ImageTransform, decode_image
from radgen.errors import DataError
from tests.data import bombs
from tests.data.dicom_files import colour_dicom


@pytest.mark.parametrize("name", ["scan.dcm", "scan.dicom", "scan.dic", "SCAN.DICOM", "Scan.Dic"])
def test_a_dicom_suffix_sends_a_headerless_file_to_the_dicom_reader(name):
    # no 'DICM' magic at byte 128: only the suffix (any case) says DICOM, and the error says so too
    junk = b"\x00" * 10
    with pytest.raises(DataError, match=rf"{name}: not a readable DICOM file") as err:
        decode_image(junk, name)
    assert str(err.value).startswith(f"{name}: not a readable DICOM file (")
    assert str(err.value).endswith("; re-export it or remove it from the manifest")


def test_other_suffixes_go_to_the_raster_reader():
    with pytest.raises(DataError, match=r"scan\.png: corrupt or unsupported image"):
        decode_image(b"\x00" * 10, "scan.png")
    with pytest.raises(DataError, match=r"scan\.dcm\.png: corrupt or unsupported image"):
        decode_image(b"\x00" * 10, "scan.dcm.png")


def _inflated_size(data: bytes) -> int:
    """Bytes the deflated part of a Deflated Explicit VR file expands to (after the plain meta group)."""
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]  # preamble, DICM, group length element
    return len(zlib.decompress(data[meta_end:], -zlib.MAX_WBITS))


def test_deflated_dicom_limit_is_twice_the_budget_plus_16_mib():
    # 16-bit zeros, 2048 x 4096 = 16 MiB of pixels plus the dataset's other elements once inflated
    data = bombs.dicom_deflate_bomb(rows=2048, columns=4096)
    inflated = _inflated_size(data)
    assert inflated > 16 << 20 and (inflated - (16 << 20)) % 2 == 0
    budget = (inflated - (16 << 20)) // 2  # limit = 2 * budget + 16 MiB = exactly the inflated size
    # at the limit, inflation is allowed; the header's 2048 x 4096 is then over the (tiny) pixel budget
    with pytest.raises(DataError, match=rf"image is 4096x2048 = 8,388,608 pixels, over the limit of {budget:,}"):
        decode_image(data, "upload", max_pixels=budget)
    # one pixel less of budget is 2 bytes less of limit: refused while inflating (every inflated byte is
    # counted, including output the inflater held back at a 1 MiB step)
    with pytest.raises(DataError, match=rf"deflated DICOM expands past {inflated - 2:,} bytes"):
        decode_image(data, "upload", max_pixels=budget - 1)
    # the same file without its 128-byte preamble and 'DICM' (meta group first; read as DICOM for its
    # suffix) is inflated just as carefully
    with pytest.raises(DataError, match=rf"deflated DICOM expands past {inflated - 2:,} bytes"):
        decode_image(data[132:], "upload.dcm", max_pixels=budget - 1)


def test_deflated_dicom_reaching_the_limit_at_a_step_boundary_is_still_inflated_to_the_end():
    # limit = 2 x 512 Ki + 16 MiB = 17 MiB, a whole number of the check's 1 MiB inflation steps; the file
    # inflates to 17 MiB of pixels plus its other elements, so it is over the limit only after the 17th step
    data = bombs.dicom_deflate_bomb(rows=2048, columns=4352)
    assert _inflated_size(data) > 17 << 20
    with pytest.raises(DataError, match=rf"deflated DICOM expands past {17 << 20:,} bytes"):
        decode_image(data, "upload", max_pixels=1 << 19)


def test_a_small_deflated_dicom_at_exactly_its_pixel_budget_decodes():
    image = decode_image(bombs.dicom_deflate_bomb(rows=40, columns=30), "small", max_pixels=40 * 30)
    assert image.mode == "L" and image.size == (30, 40)


@pytest.mark.parametrize("name, resample", [("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR),
                                            ("nearest", Image.Resampling.NEAREST), ("lanczos", Image.Resampling.LANCZOS)])
def test_each_interpolation_name_is_that_pil_filter(name, resample):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (13, 7), dtype=np.uint8))
    out = ImageTransform(5, mean=(0.0,), std=(1.0,), channels=1, interpolation=name)(image)
    expected = np.asarray(image.resize((5, 5), resample), dtype=np.float32) / 255.0
    assert np.allclose(out[0].numpy(), expected, atol=1e-6)
    # and the filters differ on this image, so a name mapped to another filter would show
    others = [f for f in Image.Resampling if f in (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR,
                                                  Image.Resampling.NEAREST, Image.Resampling.LANCZOS) and f != resample]
    assert all(not np.array_equal(np.asarray(image.resize((5, 5), f)), np.asarray(image.resize((5, 5), resample))) for f in others)


def test_budget_error_is_one_line_naming_the_file_first(tmp_path):
    Image.new("L", (100, 50), 7).save(tmp_path / "a.png")
    with pytest.raises(DataError) as err:
        decode_image((tmp_path / "a.png").read_bytes(), "a.png", max_pixels=4999)
    assert str(err.value) == ("a.png: image is 100x50 = 5,000 pixels, over the limit of 4,999; "
                              "downscale it (radiographs need a few thousand pixels per side at most)")


def test_a_flat_16bit_png_and_a_flat_dicom_decode_to_black_without_warnings(tmp_path):
    from tests.data.test_images import write_dicom

    Image.fromarray(np.full((3, 4), 1234, dtype=np.uint16)).save(tmp_path / "flat.png")  # min == max
    path = write_dicom(tmp_path / "flat.dcm", np.full((3, 4), 700))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero on the way (max - min = 0)
        for image in (decode_image((tmp_path / "flat.png").read_bytes(), "flat.png"), decode_image(path.read_bytes(), "flat.dcm")):
            assert image.mode == "L" and image.size == (4, 3)
            assert np.asarray(image).tolist() == [[0] * 4] * 3


def test_window_width_one_is_a_threshold_at_the_centre(tmp_path):
    from tests.data.test_images import write_dicom

    # slope 0.5: stored 198..201 → 99, 99.5, 100, 100.5. PS3.3 C.11.2.1.2.1: width 1 means
    # x <= c - 0.5 → 0, else 255 (a width below 1 is read as 1); width 2 is the linear ramp
    # ((x - 99.5) / 1 + 0.5) * 255: 99 → 0, 99.5 → 127.5 → 128, 100 → 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by width - 1 = 0 on the way
        for width, expected in ((1, [0, 0, 255, 255]), (0, [0, 0, 255, 255]), (2, [0, 128, 255, 255])):
            path = write_dicom(tmp_path / f"w{width}.dcm", [[198, 199, 200, 201]], slope=0.5, intercept=0, window=(100, width))
            assert np.asarray(decode_image(path.read_bytes(), path.name)).tolist() == [expected], width


def test_wide_colour_dicom_keeps_its_top_8_bits(tmp_path):
    # 12 bits stored: shifted down by 4 (4095 → 255, 2048 → 128, 16 → 1); 8 bits in 16: as is
    pixels = np.array([[[4095, 2048, 16], [16, 4095, 2048]]], dtype=np.uint16)
    image = decode_image(colour_dicom(tmp_path / "c12.dcm", pixels, bits_stored=12).read_bytes(), "c12.dcm", colour="keep")
    assert image.mode == "RGB" and np.asarray(image).tolist() == [[[255, 128, 1], [1, 255, 128]]]
    eight = np.array([[[200, 100, 7], [7, 200, 100]]], dtype=np.uint16)
    image = decode_image(colour_dicom(tmp_path / "c8.dcm", eight, bits_stored=8).read_bytes(), "c8.dcm", colour="keep")
    assert np.asarray(image).tolist() == [[[200, 100, 7], [7, 200, 100]]]


def test_colour_dicom_to_gray_uses_itu_601_luma(tmp_path):
    # red, green, blue, black → luma 76.245, 149.685, 29.07, 0 → min..max onto 0..255
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    gray = decode_image(colour_dicom(tmp_path / "c.dcm", pixels).read_bytes(), "c.dcm")
    assert gray.mode == "L" and np.asarray(gray).tolist() == [[130, 255, 50, 0]]
