"""Image decoding (PNG, 16-bit PNG, JPEG, DICOM), stitching and ImageTransform.

DICOM files are built in-process with pydicom; expected pixel values are worked out by hand from
the DICOM formulas in the comments.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from radgen.data.images import ImageTransform, load_image, stitch_images
from radgen.errors import DataError


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=None, intercept=None, window=None, with_pixels=True):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    pixels = np.asarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_rgb_and_jpeg_become_grayscale(tmp_path):
    Image.new("RGB", (6, 4), (255, 0, 0)).save(tmp_path / "red.png")
    image = load_image(tmp_path / "red.png")
    assert image.mode == "L" and image.size == (6, 4)
    assert np.asarray(image)[0, 0] == 76  # ITU-R 601 luma of pure red: 0.299 * 255 = 76.2
    Image.new("L", (8, 8), 200).save(tmp_path / "gray.jpg", quality=95)
    jpeg = load_image(tmp_path / "gray.jpg")
    assert jpeg.mode == "L" and abs(int(np.asarray(jpeg)[4, 4]) - 200) <= 2


def test_16bit_png_is_stretched_to_8bit(tmp_path):
    values = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # mode I;16
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    image = load_image(tmp_path / "deep.png")
    # (v - 0) / 4095 * 255: 1000 → 62.27 → 62, 2000 → 124.54 → 125
    assert image.mode == "L"
    assert np.asarray(image).tolist() == [[0, 62], [125, 255]]


def test_dicom_rescale_and_window(tmp_path):
    # stored [[100, 550], [600, 1100]], slope 2, intercept -100 → [[100, 1000], [1100, 2100]]
    # window c=1100, w=1001: y = ((x - 1099.5) / 1000 + 0.5) * 255, clipped
    #   100 → 0;  1000 → 0.4005*255 = 102.13 → 102;  1100 → 0.5005*255 = 127.63 → 128;  2100 → 255
    path = write_dicom(tmp_path / "a.dcm", [[100, 550], [600, 1100]], slope=2, intercept=-100, window=(1100, 1001))
    assert np.asarray(load_image(path)).tolist() == [[0, 102], [128, 255]]


def test_dicom_voi_lut_sequence_and_multi_valued_window(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    path = write_dicom(tmp_path / "lut.dcm", [[0, 1], [2, 3]])
    ds = pydicom.dcmread(path)
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 0, 8])  # LUTDescriptor: 4 entries, first input value 0, 8 bits
    lut.add_new(0x00283006, "US", [0, 10, 20, 255])  # LUTData
    ds.VOILUTSequence = [lut]
    ds.save_as(path)
    # value v → LUTData[v]; already spans 0..255, so the final stretch changes nothing
    assert np.asarray(load_image(path)).tolist() == [[0, 10], [20, 255]]
    # Several window presets: the first (c=1100, w=1001) is used → same as the single-window test.
    multi = write_dicom(tmp_path / "multi.dcm", [[100, 550], [600, 1100]], slope=2, intercept=-100, window=([1100, 40], [1001, 400]))
    assert np.asarray(load_image(multi)).tolist() == [[0, 102], [128, 255]]


def test_dicom_monochrome1_is_inverted(tmp_path):
    path = write_dicom(tmp_path / "m1", [[100, 550], [600, 1100]], photometric="MONOCHROME1", slope=2, intercept=-100, window=(1100, 1001))
    # No suffix: detected by the 'DICM' magic. 255 minus the MONOCHROME2 result above.
    assert np.asarray(load_image(path)).tolist() == [[255, 153], [127, 0]]


def test_dicom_without_window_uses_min_max(tmp_path):
    # [[0, 10], [20, 40]] → v / 40 * 255: 63.75 → 64, 127.5 → 128 (round half to even), 255
    path = write_dicom(tmp_path / "b.dcm", [[0, 10], [20, 40]])
    assert np.asarray(load_image(path)).tolist() == [[0, 64], [128, 255]]


def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", [[1, 2], [3, 4]], with_pixels=False)
    with pytest.raises(DataError, match=r"sr\.dcm: DICOM has no PixelData"):
        load_image(path)


def test_missing_corrupt_truncated_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png: image file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=r"junk\.png: corrupt or unsupported image"):
        load_image(tmp_path / "junk.png")
    Image.new("L", (64, 64), 9).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"bad\.dcm: not a readable DICOM"):
        load_image(tmp_path / "bad.dcm")


def test_stitch_scales_to_smallest_height_and_keeps_order():
    left = Image.new("L", (5, 10), 10)
    right = Image.new("L", (10, 20), 200)  # scaled to 5 x 10
    extra = [Image.new("L", (4, 10), 99)] * 3
    stitched = stitch_images([left, right, *extra], max_images=4)
    assert stitched.size == (5 + 5 + 4 + 4, 10)
    pixels = np.asarray(stitched)
    assert pixels[5, 2] == 10 and pixels[5, 7] == 200 and pixels[5, 12] == 99
    assert stitch_images([left]) is left
    with pytest.raises(DataError):
        stitch_images([])


def test_image_transform_squash_normalise_and_channels():
    image = Image.new("L", (30, 10), 255)
    out = ImageTransform(8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones_like(out))  # (1 - 0.5) / 0.5
    one = ImageTransform(8, mean=(0.25,), std=(0.25,), channels=1)(Image.new("L", (8, 8), 0))
    assert one.shape == (1, 8, 8) and torch.allclose(one, torch.full_like(one, -1.0))


def test_image_transform_shortest_edge_crop_takes_the_centre():
    # 30 x 10 image: thirds of 0 / 102 / 255. Shortest edge is already 10, so the crop is the middle third.
    array = np.zeros((10, 30), dtype=np.uint8)
    array[:, 10:20], array[:, 20:] = 102, 255
    out = ImageTransform(10, mean=(0.0,), std=(1.0,), channels=3, resize="shortest_edge_crop")(Image.fromarray(array))
    assert out.shape == (3, 10, 10)
    assert torch.allclose(out, torch.full_like(out, 102 / 255))
    with pytest.raises(DataError, match="squash"):
        ImageTransform(8, resize="stretch")
    with pytest.raises(DataError, match="3 values"):
        ImageTransform(8, mean=(0.1, 0.2), std=(1.0,))
