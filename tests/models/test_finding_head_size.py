"""A finding head that reads the images at its own size (model.findings.image_size), while the
decoder's encoder keeps its own: images are prepared at the larger size and each pass resizes."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from radgen.cli import main
from radgen.config import load_recipe
from radgen.errors import ConfigError
from radgen.models import ReportGenerator, build_model
from radgen.models.build import image_transform_for
from radgen.models.fast import prepare_for_inference
from tests.models.conftest import tiny
from tests.train.imaging import write_studies

HEAD = 96  # the tiny encoder reads 64 px


@pytest.fixture(scope="module")
def sized():
    return tiny("radgen-small", "model.findings.tune_encoder_blocks=2", f"model.findings.image_size={HEAD}").eval()


def _radiograph(size: int = 256) -> Image.Image:
    """A smooth grey image with a few soft blobs: resampling it at two sizes differs little."""
    y, x = np.mgrid[0:size, 0:size] / size
    picture = 0.4 + 0.3 * x + sum(0.25 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.01) for cx, cy in ((0.3, 0.4), (0.7, 0.6)))
    return Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8), mode="L")


def _batch(model, images) -> torch.Tensor:
    return torch.stack([model.image_transform(image) for image in images])


def test_images_are_prepared_at_the_heads_size_and_each_pass_reads_its_own(sized):
    assert sized.encoder.image_size == 64 and sized.head_image_size() == HEAD and sized.image_transform.size == HEAD
    image = _radiograph()
    prepared = _batch(sized, [image])
    # the encoder's pass reads the image as its own 64-px preparation would give it, up to resampling
    own = image_transform_for(sized.encoder)(image)[None]
    assert own.shape[-1] == 64
    from radgen.models.generator import _at_size

    resized = _at_size(prepared, 64, HEAD)
    assert resized.shape == own.shape and float((resized - own).abs().mean()) < 0.01
    with torch.no_grad():
        torch.testing.assert_close(sized.encode_images(prepared), sized.encoder(resized))
        # the head's pass reads all 96 px: its trunk map is larger than the encoder's at 64
        head_input = sized.head_input(prepared)
        torch.testing.assert_close(head_input, sized.encoder.split_forward(prepared, 2, tokens=False)[1])
        assert head_input.shape[-1] > sized.encoder.split_forward(own, 2, tokens=False)[1].shape[-1]
        features, from_one_call = sized.features_and_head_input(pixel_values=prepared)
        torch.testing.assert_close(features, sized.encode_images(prepared))
        torch.testing.assert_close(from_one_call, head_input)


def test_a_model_without_a_head_size_reads_any_size_as_before():
    model = tiny("radgen-small", "model.findings.tune_encoder_blocks=2").eval()
    assert model.head_image_size() == 64 and model.image_transform.size == 64
    images = torch.randn(2, 3, HEAD, HEAD, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(images), model.encoder(images))  # not resized


def test_generate_save_load_and_inference_form_keep_the_head_size(sized, tmp_path):
    images = _batch(sized, [_radiograph(), _radiograph(200).transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    probs = sized.predict_findings(pixel_values=images)[0]
    reports = sized.generate(pixel_values=images, num_beams=1, max_new_tokens=4)
    assert [r.finding_probs["Cardiomegaly"] for r in reports] == pytest.approx(probs[:, 1].tolist(), abs=1e-4)
    sized.save_pretrained(tmp_path / "m")
    loaded = ReportGenerator.from_pretrained(tmp_path / "m").eval()
    assert loaded.recipe.model.findings.image_size == HEAD and loaded.image_transform.size == HEAD
    torch.testing.assert_close(loaded.predict_findings(pixel_values=images)[0], probs)
    prepared = copy.deepcopy(loaded)
    prepare_for_inference(prepared, "float32")  # batch norms folded, channels-last: same answers at both sizes
    torch.testing.assert_close(prepared.predict_findings(pixel_values=images)[0], probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(prepared.visual_tokens(images), loaded.visual_tokens(images), atol=1e-5, rtol=1e-4)


def test_a_head_size_needs_the_heads_own_blocks():
    with pytest.raises(ConfigError, match="image_size=96.*tune_encoder_blocks > 0"):
        tiny("radgen-small", f"model.findings.image_size={HEAD}")
    with pytest.raises(ConfigError, match="at 32 px or more"):
        tiny("radgen-small", "model.findings.tune_encoder_blocks=2", "model.findings.image_size=8")


def test_fit_findings_image_size_fits_a_new_head_at_that_size(tmp_path, capsys):
    manifest = write_studies(tmp_path / "studies", train=16, val=8)
    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny", overrides=["model.findings.tune_encoder_blocks=2"])).save_pretrained(tmp_path / "m")
    common = ["--data", str(manifest), "--max-epochs", "2", "--patience", "2", "--no-progress", "--feature-cache-dir", str(tmp_path / "cache")]
    assert main(["fit-findings", str(tmp_path / "m"), "--image-size", str(HEAD), "--out", str(tmp_path / "big"), *common]) == 0
    assert main(["fit-findings", str(tmp_path / "m"), "--image-size", "48", "--out", str(tmp_path / "small"), *common]) == 0
    assert "finding head fitted" in capsys.readouterr().out
    big, small = ReportGenerator.from_pretrained(tmp_path / "big"), ReportGenerator.from_pretrained(tmp_path / "small")
    assert (big.recipe.model.findings.image_size, big.image_transform.size) == (HEAD, HEAD)
    # a smaller head: images stay at the encoder's 64 px and the head's pass shrinks them
    assert (small.recipe.model.findings.image_size, small.image_transform.size, small.head_image_size()) == (48, 64, 48)
    assert json.loads((tmp_path / "big" / "finding_head_fit.json").read_text())["epochs"] <= 2
    # each size has its own trunk-map cache: a 48-px head's maps are not a 64-px head's, though both read 64-px images
    caches = sorted(path.name.split("-", 1)[1] for path in (tmp_path / "cache").iterdir())
    assert caches == ["trunk2-48px", f"trunk2-{HEAD}px"]
