"""Training data for radgen-small's prompt context (the indication) and lateral finding head: both
views reach the feature cache, and every batch carries the contexts and which studies have a lateral."""

import torch

from radgen.config import load_recipe
from radgen.data.dataset import collate_studies, lateral_inputs
from radgen.train.data import collate_features, load_splits
from radgen.train.feature_cache import CachedFeatures, FeatureCache, encoder_identity, fill_cache
from tests.models.conftest import tiny
from tests.train.imaging import write_studies


def test_cached_items_carry_the_lateral_view_and_the_indication(tmp_path):
    manifest = write_studies(tmp_path / "studies", train=4, val=2)
    model = tiny("radgen-small").eval()
    recipe = load_recipe("radgen-small", size="tiny", overrides=[f"data.manifest={manifest}"])
    train, _ = load_splits(recipe, model.image_transform)
    first = train[0]
    assert first["has_lateral"] and first["context"] == "Chest pain." and train[1]["context"] == ""
    assert not torch.equal(first["lateral_pixel_values"], first["pixel_values"])

    cache = FeatureCache(tmp_path / "cache", encoder_identity(model))
    records, encoded = fill_cache(model, train, cache, 3, torch.device("cpu"), progress=False)
    assert encoded == 8  # 4 frontal + 4 lateral views
    cached = CachedFeatures(records, cache)
    with torch.no_grad():
        expected = model.encode_images(first["lateral_pixel_values"][None])[0]
    torch.testing.assert_close(cached[0]["lateral_features"].float(), expected, atol=2e-2, rtol=2e-2)  # fp16 store

    batch = collate_features([cached[i] for i in range(4)])
    assert batch["contexts"][:2] == ["Chest pain.", ""] and batch["lateral_mask"].tolist() == [True] * 4
    assert set(lateral_inputs(batch)) == {"lateral_features", "lateral_mask"}
    pixels = collate_studies([train[i] for i in range(2)])
    assert pixels["lateral_pixel_values"].shape == pixels["pixel_values"].shape
    assert set(lateral_inputs(pixels)) == {"lateral_pixel_values", "lateral_mask"}


def test_a_study_without_a_lateral_gets_zeros_and_a_false_mask(tmp_path):
    manifest = write_studies(tmp_path / "studies", train=2, val=1)
    lines = manifest.read_text().splitlines()
    import json

    rows = [json.loads(line) for line in lines]
    rows[0]["images"] = [ref for ref in rows[0]["images"] if ref["view"] != "LATERAL"]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model = tiny("radgen-small").eval()
    recipe = load_recipe("radgen-small", size="tiny", overrides=[f"data.manifest={manifest}"])
    train, _ = load_splits(recipe, model.image_transform)
    assert train[0]["has_lateral"] is False and train[0]["lateral_image_key"] is None
    assert (train[0]["lateral_pixel_values"] == 0).all() and train[1]["has_lateral"] is True
    cache = FeatureCache(tmp_path / "cache", encoder_identity(model))
    records, encoded = fill_cache(model, train, cache, 4, torch.device("cpu"), progress=False)
    assert encoded == 3
    batch = collate_features([CachedFeatures(records, cache)[i] for i in range(2)])
    assert batch["lateral_mask"].tolist() == [False, True] and (batch["lateral_features"][0] == 0).all()


def test_an_image_of_unknown_view_read_as_the_frontal_is_not_also_the_lateral(tmp_path):
    # `radgen generate scans/` gives each loose file view UNKNOWN: the one image is the frontal, there is no lateral
    import json

    manifest = write_studies(tmp_path / "studies", train=3, val=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    pa, lateral = rows[0]["images"]
    rows[0]["images"] = [{"path": pa["path"], "view": "UNKNOWN"}]
    rows[1]["images"] = [{"path": pa["path"], "view": "UNKNOWN"}, {"path": lateral["path"], "view": "UNKNOWN"}]
    rows[2]["images"] = [{"path": lateral["path"], "view": "LATERAL"}]  # a lateral alone is read as the frontal
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model = tiny("radgen-small").eval()
    recipe = load_recipe("radgen-small", size="tiny", overrides=[f"data.manifest={manifest}"])
    train, _ = load_splits(recipe, model.image_transform)
    assert [train[i]["has_lateral"] for i in range(3)] == [False, True, False]
    assert (train[0]["lateral_pixel_values"] == 0).all() and (train[2]["lateral_pixel_values"] == 0).all()
    # two unknown views: the first is the frontal, the second the lateral
    assert torch.equal(train[1]["pixel_values"], train[0]["pixel_values"])
    assert not torch.equal(train[1]["lateral_pixel_values"], train[1]["pixel_values"])
