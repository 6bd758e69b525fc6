"""Stitching, "pad" placement and ImageTransform's defaults and refusals, with values worked out by hand
(found unguarded by the complete mutation run of radgen/data/images.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from radgen.data.images import ImageTransform, pad_placement, stitch_images
from radgen.errors import DataError


@pytest.mark.parametrize("width, height, size, expected", [
    (200, 100, 64, (64, 32, 0, 16)),  # landscape: longer side 64, centred vertically
    (100, 200, 64, (32, 64, 16, 0)),  # portrait
    (64, 64, 64, (64, 64, 0, 0)),
    (1000, 3, 64, (64, 1, 0, 31)),  # 0.19 px high rounds to 0: kept at 1 px
    (101, 100, 10, (10, 10, 0, 0)),  # 9.9 px rounds to 10
    (3, 7, 10, (4, 10, 3, 0)),  # 4.29 px wide: left (10 - 4) // 2
    (3, 1000, 64, (1, 64, 31, 0)),  # 0.19 px wide: kept at 1 px
])
def test_pad_placement_by_hand(width, height, size, expected):
    assert pad_placement(width, height, size) == expected


def test_stitch_scales_to_the_smallest_height_and_places_left_to_right():
    tall = Image.new("L", (30, 40), 10)
    short = Image.new("L", (50, 20), 200)
    out = stitch_images([tall, short])
    assert out.mode == "L" and out.size == (15 + 50, 20)  # 30 x 40 scaled to 15 x 20
    pixels = np.asarray(out)
    assert (pixels[:, :15] == 10).all() and (pixels[:, 15:] == 200).all()


def test_stitch_of_gray_and_colour_is_colour():
    gray, colour = Image.new("L", (4, 4), 50), Image.new("RGB", (4, 4), (255, 0, 0))
    out = stitch_images([gray, colour])
    assert out.mode == "RGB"
    assert np.asarray(out)[0, 0].tolist() == [50, 50, 50] and np.asarray(out)[0, 4].tolist() == [255, 0, 0]


def test_stitch_keeps_the_first_images_up_to_the_limit():
    images = [Image.new("L", (2, 2), value) for value in (1, 2, 3, 4, 5)]
    assert np.asarray(stitch_images(images)).tolist()[0] == [1, 1, 2, 2, 3, 3, 4, 4]  # max_images 4
    assert stitch_images(images[:1]) is images[0]


def test_default_normalisation_maps_black_to_minus_one_and_white_to_one():
    image = Image.fromarray(np.array([[0, 255]], dtype=np.uint8).repeat(2, axis=0))
    out = ImageTransform(2)(image)  # default mean = std = 0.5 on 3 channels
    assert out.shape == (3, 2, 2)
    assert out[:, :, 0].flatten().tolist() == [-1.0] * 6 and out[:, :, 1].flatten().tolist() == [1.0] * 6


@pytest.mark.parametrize("kwargs, message", [
    ({"resize": "stretch"}, r"^unknown resize mode 'stretch'; use one of squash, shortest_edge_crop, pad$"),
    ({"channels": 2}, r"^channels must be 1 or 3, got 2$"),
    ({"interpolation": "cubic"}, r"^unknown interpolation 'cubic'; use one of bicubic, bilinear, nearest, lanczos$"),
    ({"mean": (0.5, 0.5)}, r"^mean/std need 3 values \(one per channel\), got 2/3$"),
    ({"std": (0.5, 0.0, 0.5)}, r"^image std must be non-zero$"),
])
def test_transform_refusals_are_one_line(kwargs, message):
    with pytest.raises(DataError, match=message):
        ImageTransform(8, **kwargs)


def _columns(values, height: int) -> Image.Image:
    return Image.fromarray(np.array([values] * height, dtype=np.uint8))


def test_shortest_edge_crop_keeps_the_centre_columns():
    # 5 x 2 image, size 2: the short side is already 2 (scale 1), then the centre 2 of 5 columns
    out = ImageTransform(2, mean=(0.0,), std=(1.0,), channels=1, resize="shortest_edge_crop", interpolation="nearest")
    pixels = (out(_columns([0, 50, 100, 150, 200], 2))[0] * 255).round().int().tolist()
    assert pixels == [[50, 100], [50, 100]]


@pytest.mark.parametrize("transpose", [False, True])
def test_shortest_edge_crop_scales_the_short_side_then_keeps_the_centre(transpose):
    # 4 x 12 (rows valued 0..11), size 2: scaled by 1/2 to 2 x 6, keeping rows 1, 3, ..., 11 (nearest);
    # the centre 2 of those 6 are rows 5 and 7. Transposed: the same along the columns.
    values = np.arange(12, dtype=np.uint8).reshape(12, 1).repeat(4, axis=1) * 20
    image = Image.fromarray(values.T.copy() if transpose else values)
    out = ImageTransform(2, mean=(0.0,), std=(1.0,), channels=1, resize="shortest_edge_crop", interpolation="nearest")
    pixels = (out(image)[0] * 255).round().int().numpy()
    expected = np.array([[100, 100], [140, 140]])
    assert pixels.tolist() == (expected.T if transpose else expected).tolist()


def test_pad_centres_the_image_on_a_mean_coloured_square():
    # 4 x 2 image, size 4: kept at 4 x 2 and placed on rows 1-2; the fill is the mean (0 after normalising)
    out = ImageTransform(4, mean=(0.5,), std=(0.5,), channels=1, resize="pad", interpolation="nearest")
    tensor = out(_columns([0, 255, 0, 255], 2))
    assert tensor.shape == (1, 4, 4)
    assert tensor[0].tolist() == [[0.0] * 4, [-1.0, 1.0, -1.0, 1.0], [-1.0, 1.0, -1.0, 1.0], [0.0] * 4]
    colour = ImageTransform(4, resize="pad", interpolation="nearest")(Image.new("RGB", (2, 4), (255, 0, 255)))
    assert colour.shape == (3, 4, 4)
    assert colour[:, :, 0].abs().sum() == 0 and colour[:, :, 3].abs().sum() == 0  # columns 0 and 3: fill
    assert colour[:, 0, 1].tolist() == [1.0, -1.0, 1.0]


def test_one_channel_encoders_get_one_channel_of_luminance():
    out = ImageTransform(2, mean=(0.0,), std=(1.0,), channels=1)(Image.new("RGB", (2, 2), (255, 0, 0)))
    assert out.shape == (1, 2, 2) and torch_allclose(out, round(0.299 * 255) / 255)


def torch_allclose(tensor, value: float) -> bool:
    return bool(np.allclose(tensor.numpy(), value, atol=1e-6))


def test_transform_repr_names_every_setting():
    assert repr(ImageTransform(8, channels=1, mean=(0.25,), std=(2,), resize="pad", interpolation="nearest")) == (
        "ImageTransform(size=8, mean=(0.25,), std=(2.0,), channels=1, resize='pad', interpolation='nearest')")


def test_a_stitched_sliver_keeps_at_least_one_pixel_column():
    sliver, square = Image.new("L", (1, 100), 255), Image.new("L", (10, 10), 0)
    out = stitch_images([sliver, square])  # the sliver scaled to 0.1 x 10 px: kept 1 px wide
    assert out.size == (11, 10) and np.asarray(out)[:, 0].min() > 0 and np.asarray(out)[:, 1:].max() == 0


def test_shortest_edge_crop_rounds_an_odd_margin_down():
    # 4 x 18 (rows 0..17), size 2: scaled to 2 x 9 (rows 1, 3, ..., 17); 7 rows to drop: 3 above, 4 below
    values = np.arange(18, dtype=np.uint8).reshape(18, 1).repeat(4, axis=1) * 10
    out = ImageTransform(2, mean=(0.0,), std=(1.0,), channels=1, resize="shortest_edge_crop", interpolation="nearest")
    assert (out(Image.fromarray(values))[0] * 255).round().int()[:, 0].tolist() == [70, 90]
