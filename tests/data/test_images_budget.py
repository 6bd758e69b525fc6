"""One pixel budget for every decoder, checked from the header before pixels are allocated."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from radgen.data import images
from radgen.data.images import MAX_PIXELS, decode_image, load_image
from radgen.errors import DataError
from tests.data import bombs
from tests.data.test_images import write_dicom

OVER_BUDGET = "over the limit of 40,000,000"


@pytest.mark.parametrize("build", [bombs.png_bomb, bombs.jpeg_bomb, bombs.dicom_header_bomb, bombs.dicom_jpeg_bomb, bombs.dicom_rle_bomb])
def test_bombs_are_refused_from_the_header(build):
    data = build()
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=OVER_BUDGET) as err:
            decode_image(data, "upload")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(err.value).startswith("upload: image is 1") and "\n" not in str(err.value)
    # numpy's allocations are traced: decoding the declared 169-196 Mpx would show up here.
    assert peak < len(data) + 8_000_000


def test_deflated_dicom_is_refused_without_inflating_it():
    data = bombs.dicom_deflate_bomb()  # ~380 KB that pydicom would inflate to 392 MB
    assert len(data) < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="deflated DICOM expands past"):
            decode_image(data, "upload")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16_000_000


def test_small_versions_of_each_bomb_decode():
    """The same builders at radiograph size are valid files: the refusals above are the budget, not corruption."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(bombs.png_bomb(width=40, height=30), "small").size == (40, 30)
        for build in (bombs.dicom_rle_bomb, bombs.dicom_deflate_bomb):
            image = decode_image(build(rows=40, columns=30), "small")
            assert image.mode == "L" and image.size == (30, 40)
    assert decode_image(bombs.dicom_jpeg_bomb(16, 16), "small").size == (16, 16)


def test_jpeg_codestream_larger_than_the_dicom_header_is_refused():
    with pytest.raises(DataError, match="compressed pixel data is 64x64 but the header says 16x16"):
        decode_image(bombs.dicom_jpeg_bomb(64, 64, header=(16, 16)), "upload")
    with pytest.raises(DataError, match=OVER_BUDGET):  # a small header cannot hide a huge codestream
        decode_image(bombs.dicom_jpeg_bomb(13000, 13000, header=(16, 16)), "upload")


def test_budget_is_a_parameter_and_the_limit_is_inclusive(tmp_path):
    Image.new("L", (100, 50), 7).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=5000).size == (100, 50)
    with pytest.raises(DataError, match=r"a\.png: image is 100x50 = 5,000 pixels, over the limit of 4,999"):
        load_image(tmp_path / "a.png", max_pixels=4999)
    path = write_dicom(tmp_path / "a.dcm", np.zeros((50, 100)))
    with pytest.raises(DataError, match=r"a\.dcm: image is 100x50"):
        load_image(path, max_pixels=4999)
    assert MAX_PIXELS == 40_000_000  # docs/data.md and docs/serve.md quote this figure


def test_row_blocks_give_the_same_pixels_as_whole_image_maths(tmp_path, monkeypatch):
    # Same files and hand-worked values as tests/data/test_images.py, with 1-pixel blocks.
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 1)
    windowed = write_dicom(tmp_path / "w.dcm", [[100, 550], [600, 1100]], slope=2, intercept=-100, window=(1100, 1001))
    assert np.asarray(load_image(windowed)).tolist() == [[0, 102], [128, 255]]
    stretched = write_dicom(tmp_path / "s.dcm", [[0, 10], [20, 40]])
    assert np.asarray(load_image(stretched)).tolist() == [[0, 64], [128, 255]]
    Image.fromarray(np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert np.asarray(load_image(tmp_path / "deep.png")).tolist() == [[0, 62], [125, 255]]


def test_only_the_first_frame_is_decoded(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "multi.dcm", [[0, 10], [20, 40]])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 3
    ds.PixelData = np.array([[[0, 10], [20, 40]], [[40, 40], [40, 40]], [[0, 0], [0, 0]]], dtype=np.uint16).tobytes()
    ds.save_as(path)
    assert np.asarray(load_image(path)).tolist() == [[0, 64], [128, 255]]


def test_error_text_has_no_object_addresses(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError) as err:
        load_image(tmp_path / "junk.png")
    assert " at 0x" not in str(err.value)
    assert images._clean(ValueError("cannot identify image file <_io.BytesIO object at 0x7f3a2c1b9e50>")) == "cannot identify image file <data>"
