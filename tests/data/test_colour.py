"""data.colour: "keep" decodes real colour to RGB (ROCO, seed 001), "gray" to L; same pixel budget."""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from radgen.data import images
from radgen.data.dataset import StudyDataset, _DecodedImageCache
from radgen.data.images import COLOUR_MODES, ImageTransform, decode_image, encoder_colour, load_image
from radgen.data.study import ImageRef, Study
from radgen.errors import ConfigError, DataError
from tests.data.dicom_files import colour_dicom

RGB_TRANSFORM = ImageTransform(8, mean=(0.0,), std=(1.0,), channels=3)
GRAY_TRANSFORM = ImageTransform(8, mean=(0.0,), std=(1.0,), channels=1)
RED, BLUE = (220, 20, 30), (10, 40, 230)


def _doppler(path, size=(16, 8)):
    """A gray frame with a red and a blue box, like a Doppler colour box: left half red, right half blue."""
    pixels = np.full((size[1], size[0], 3), 90, dtype=np.uint8)
    pixels[:, : size[0] // 2] = RED
    pixels[:, size[0] // 2:] = BLUE
    Image.fromarray(pixels, mode="RGB").save(path, **({"quality": 95, "subsampling": 0} if str(path).endswith(".jpg") else {}))
    return path


def _png_header(width: int, height: int, colour_type: int) -> bytes:
    """A PNG that only declares width x height (colour type 2 = RGB, 6 = RGBA, 3 = palette): no pixels behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    extra = chunk(b"PLTE", bytes(range(3)) * 1) if colour_type == 3 else b""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_colour_png_keeps_its_colours_and_gray_drops_them(tmp_path):
    path = _doppler(tmp_path / "doppler.png")
    kept = load_image(path, colour="keep")
    assert kept.mode == "RGB" and kept.size == (16, 8)
    assert kept.getpixel((0, 0)) == RED and kept.getpixel((15, 7)) == BLUE
    gray = load_image(path, colour="gray")
    assert gray.mode == "L"
    assert gray.getpixel((0, 0)) == round(0.299 * 220 + 0.587 * 20 + 0.114 * 30)  # ITU-R 601 luma: 81
    assert load_image(path).mode == "L"  # gray stays the default


def test_colour_jpeg_keeps_its_colours(tmp_path):
    kept = load_image(_doppler(tmp_path / "doppler.jpg"), colour="keep")
    assert kept.mode == "RGB"
    red, blue = np.asarray(kept)[4, 2].astype(int), np.asarray(kept)[4, 13].astype(int)
    assert np.abs(red - RED).max() <= 8 and np.abs(blue - BLUE).max() <= 8  # lossy, but still red and blue
    assert load_image(tmp_path / "doppler.jpg", colour="gray").mode == "L"


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK"])
def test_other_colour_modes_become_rgb(tmp_path, mode):
    source = Image.fromarray(np.asarray(Image.open(_doppler(tmp_path / "d.png"))), mode="RGB")
    converted = source.convert(mode) if mode != "P" else source.quantize(colors=4)
    buffer = io.BytesIO()
    converted.save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    image = decode_image(buffer.getvalue(), f"d.{mode}", colour="keep")
    assert image.mode == "RGB"
    red = np.asarray(image)[0, 0].astype(int)
    assert red[0] > 150 and red[1] < 80 and red[2] < 80, red


def test_gray_stored_as_rgb_becomes_l_with_the_same_pixels(tmp_path):
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    Image.fromarray(np.stack([ramp] * 3, axis=-1), mode="RGB").save(tmp_path / "xray-as-rgb.png")
    kept = load_image(tmp_path / "xray-as-rgb.png", colour="keep")
    assert kept.mode == "L"
    assert np.array_equal(np.asarray(kept), ramp)
    assert np.array_equal(np.asarray(kept), np.asarray(load_image(tmp_path / "xray-as-rgb.png", colour="gray")))
    Image.fromarray(ramp).convert("LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png", colour="keep").mode == "L"


def test_one_colour_pixel_in_the_last_row_block_keeps_the_image_rgb(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 16)  # one-row blocks: the check must reach the last one
    pixels = np.full((6, 16, 3), 100, dtype=np.uint8)
    pixels[5, 15] = (101, 100, 100)  # near-gray: kept as colour, no tolerance
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "almost.png")
    image = load_image(tmp_path / "almost.png", colour="keep")
    assert image.mode == "RGB" and image.getpixel((15, 5)) == (101, 100, 100)


def test_colour_dicom_is_kept_as_stored(tmp_path):
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[:, :3], pixels[:, 3:] = RED, BLUE
    path = colour_dicom(tmp_path / "us.dcm", pixels)
    kept = load_image(path, colour="keep")
    assert kept.mode == "RGB" and kept.getpixel((0, 0)) == RED and kept.getpixel((5, 3)) == BLUE
    gray = load_image(path)
    assert gray.mode == "L" and gray.getpixel((0, 0)) != gray.getpixel((5, 3))


@pytest.mark.parametrize("colour_type", [2, 6, 3])
def test_pixel_budget_is_enforced_for_colour_before_decoding(colour_type):
    bomb = _png_header(8000, 8000, colour_type)  # 64 Mpx declared: over the 40 Mpx budget, under PIL's own refusal
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="upload: image is 8000x8000 = 64,000,000 pixels, over the limit of 40,000,000"):
            decode_image(bomb, "upload", colour="keep")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # 64 Mpx of RGB would be 192 MB


def test_colour_budget_is_the_same_inclusive_limit(tmp_path):
    _doppler(tmp_path / "d.png", size=(100, 50))
    assert load_image(tmp_path / "d.png", max_pixels=5000, colour="keep").mode == "RGB"
    with pytest.raises(DataError, match=r"d\.png: image is 100x50 = 5,000 pixels, over the limit of 4,999"):
        load_image(tmp_path / "d.png", max_pixels=4999, colour="keep")
    pixels = np.zeros((50, 100, 3), dtype=np.uint8)
    with pytest.raises(DataError, match=r"us\.dcm: image is 100x50"):
        load_image(colour_dicom(tmp_path / "us.dcm", pixels), max_pixels=4999, colour="keep")


def test_unknown_colour_modes_are_refused_in_one_line(tmp_path):
    from radgen.config import DATA_COLOUR_MODES, load_recipe

    assert DATA_COLOUR_MODES == COLOUR_MODES  # config repeats them to stay import-light
    with pytest.raises(DataError, match="unknown colour mode 'rgb'; use one of gray, keep"):
        decode_image(b"\x89PNG", "x.png", colour="rgb")
    with pytest.raises(ConfigError, match=r"data\.colour=color is not a colour mode; use one of gray, keep") as err:
        load_recipe("blip-captioning", size="tiny", overrides=["data.colour=color"])
    assert "\n" not in str(err.value)


def test_a_one_channel_encoder_keeps_getting_gray():
    assert encoder_colour("keep", RGB_TRANSFORM) == "keep"
    assert encoder_colour("keep", GRAY_TRANSFORM) == "gray"
    assert encoder_colour("gray", RGB_TRANSFORM) == "gray"


def _study(tmp_path):
    _doppler(tmp_path / "doppler.png")
    return [Study("roco-1", images=[ImageRef("doppler.png", "UNKNOWN")], sections={"findings": "Doppler shows flow."})]


def test_dataset_keeps_colour_and_keys_it_apart(tmp_path):
    studies = _study(tmp_path)
    kept = StudyDataset(studies, RGB_TRANSFORM, root=tmp_path, colour="keep")[0]
    gray = StudyDataset(studies, RGB_TRANSFORM, root=tmp_path)[0]
    assert kept["pixel_values"].shape == gray["pixel_values"].shape == (3, 8, 8)
    red = kept["pixel_values"][:, 0, 0]
    assert red[0] > 0.8 and red[1] < 0.1 and red[2] < 0.15  # the channels differ: R high, G/B low
    assert torch.equal(gray["pixel_values"][0], gray["pixel_values"][1])  # gray: one value over three channels
    assert kept["image_key"] != gray["image_key"]
    digest = hashlib.sha1((tmp_path / "doppler.png").read_bytes()).hexdigest()
    # gray keys are the ones from before data.colour, so existing feature caches stay valid
    assert gray["image_key"] == hashlib.sha1(f"first_frontal:1:{digest}".encode()).hexdigest()
    one_channel = StudyDataset(studies, GRAY_TRANSFORM, root=tmp_path, colour="keep")
    assert one_channel.colour == "gray" and one_channel[0]["image_key"] == gray["image_key"]
    with pytest.raises(DataError, match="unknown colour mode"):
        StudyDataset(studies, RGB_TRANSFORM, root=tmp_path, colour="color")


def test_lateral_key_includes_the_colour_mode(tmp_path):
    _doppler(tmp_path / "pa.png")
    _doppler(tmp_path / "lat.png")
    studies = [Study("s", images=[ImageRef("pa.png", "PA"), ImageRef("lat.png", "LATERAL")], sections={"findings": "x"})]
    kept = StudyDataset(studies, RGB_TRANSFORM, root=tmp_path, colour="keep", lateral=True)[0]
    gray = StudyDataset(studies, RGB_TRANSFORM, root=tmp_path, lateral=True)[0]
    assert kept["lateral_image_key"] != gray["lateral_image_key"]
    assert not torch.equal(kept["lateral_pixel_values"][0], kept["lateral_pixel_values"][2])


def test_decoded_image_cache_never_mixes_gray_and_colour(tmp_path):
    path = _doppler(tmp_path / "doppler.png")
    cache = _DecodedImageCache(8)
    assert cache.get(path, "gray")[1].mode == "L"
    assert cache.get(path, "keep")[1].mode == "RGB"  # not the gray decode cached a line above
    assert cache.get(path, "gray")[1].mode == "L"
    assert (cache.misses, cache.hits) == (2, 1)


def test_pipeline_inputs_follow_the_colour_mode(tmp_path):
    from radgen.pipeline import to_image

    path = _doppler(tmp_path / "doppler.png")
    pil = Image.open(path).convert("RGB")
    for item in (path, path.read_bytes(), pil, np.asarray(pil), np.asarray(pil).astype(np.float32)):
        assert to_image(item, colour="keep").mode == "RGB", type(item)
        assert to_image(item).mode == "L", type(item)
    assert to_image(pil, colour="keep").getpixel((0, 0)) == RED
    # float arrays: one min..max (10..230 here) over all channels onto 0..255, so red stays red
    assert to_image(np.asarray(pil).astype(np.float32) * 4, colour="keep").getpixel((0, 0)) == (243, 12, 23)
