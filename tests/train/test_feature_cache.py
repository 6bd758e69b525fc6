"""Frozen-encoder feature cache: same losses as the pixel path, reuse, and invalidation."""

import numpy as np
import pytest
import torch

from radgen.errors import DataError
from radgen.train.feature_cache import FeatureCache, encoder_identity, fill_cache
from radgen.train.run_log import read_metrics
from radgen.train.trainer import Trainer
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe

ONE_STAGE = [{"name": "connector", "train": ["connector"], "max_steps": 6, "lr": 3e-3}]


def _run(tmp_path, collate, name, cache, models, cache_dir=None, train=None, perturb=False):
    recipe = fake_recipe(**{"stages": ONE_STAGE, "train.feature_cache": cache, "train.feature_cache_dtype": "float32",
                            "train.feature_cache_dir": str(cache_dir or tmp_path / "cache")})

    def factory(r):
        model = TinyReportGenerator(r)
        if perturb:
            with torch.no_grad():
                model.encoder[0].weight.mul_(1.01)
        models.append(model)
        return model

    Trainer(recipe, tmp_path / name, model_factory=factory, train_dataset=train or FakeStudies(20),
            val_dataset=FakeStudies(6, seed=1, prefix="v"), collate=collate, progress=False).train()
    return [(r["kind"], r.get("loss"), r.get("val_loss")) for r in read_metrics(tmp_path / name)]


def test_cached_training_matches_pixel_training_and_reuses_the_store(tmp_path, fake_collate):
    models = []
    pixels = _run(tmp_path, fake_collate, "pixels", False, models)
    cached = _run(tmp_path, fake_collate, "cached", True, models)
    assert len(pixels) == len(cached)
    for (kind_a, loss_a, val_a), (kind_b, loss_b, val_b) in zip(pixels, cached):
        assert kind_a == kind_b
        assert (loss_a or 0) == pytest.approx(loss_b or 0, abs=1e-5) and (val_a or 0) == pytest.approx(val_b or 0, abs=1e-5)
    # first cached run: each of the 26 distinct images encoded once; training never touched the encoder
    assert models[1].encode_calls == 26
    assert models[0].encode_calls > 6 * 4  # the pixel run encodes every batch
    _run(tmp_path, fake_collate, "again", True, models)
    assert models[2].encode_calls == 0  # same encoder, same images: all reused


def test_new_encoder_weights_or_new_image_invalidate(tmp_path, fake_collate):
    models = []
    _run(tmp_path, fake_collate, "first", True, models)
    _run(tmp_path, fake_collate, "perturbed", True, models, perturb=True)
    assert models[1].encode_calls == 26  # different weights → different encoder id → nothing reused
    assert len(list((tmp_path / "cache").iterdir())) == 2
    edited = FakeStudies(20)
    edited.items[3]["pixel_values"] = edited.items[3]["pixel_values"].flip(-1)
    edited.items[3]["image_key"] = "edited-image-hash"  # StudyDataset's key changes with the image bytes
    _run(tmp_path, fake_collate, "edited", True, models, train=edited)
    assert models[2].encode_calls == 1


def test_identity_covers_weights_and_transform():
    torch.manual_seed(0)
    model = TinyReportGenerator()
    base = encoder_identity(model)
    assert encoder_identity(model) == base
    model.image_transform.size = 32
    assert encoder_identity(model) != base
    model.image_transform.size = 16
    model.encoder[1].running_mean += 1  # buffers count too
    assert encoder_identity(model) != base


def test_store_round_trip_fp16_and_bad_shard(tmp_path):
    cache = FeatureCache(tmp_path, "enc", "float16")
    features = torch.randn(3, 5, 4)
    cache.add(["a", "b", "c"], features)
    cache.add(["d"], features[:1] * 2)
    reopened = FeatureCache(tmp_path, "enc", "float16")
    assert len(reopened) == 4 and reopened.missing(["a", "e", "e"]) == ["e"]
    got = reopened.get(["c", "d"])
    assert got.dtype == torch.float32
    assert torch.allclose(got[0], features[2], atol=1e-2) and torch.allclose(got[1], features[0] * 2, atol=2e-2)
    assert not torch.equal(got[0], features[2])  # it really went through float16
    assert np.load(tmp_path / "enc" / "shard-00000.npy", mmap_mode="r").dtype == np.float16
    (tmp_path / "enc" / "shard-00001.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="shard-00001.npy: unreadable feature shard"):
        FeatureCache(tmp_path, "enc", "float16").get(["d"])
    with pytest.raises(DataError, match="another encoder/dtype"):
        FeatureCache(tmp_path, "enc", "float32")


def test_fill_cache_encodes_duplicates_once(tmp_path):
    torch.manual_seed(0)
    model = TinyReportGenerator().eval()
    data = FakeStudies(5)
    data.items.append(dict(data.items[0], study_id="dup"))  # same image in two studies
    cache = FeatureCache(tmp_path, encoder_identity(model), "float32")
    records, encoded = fill_cache(model, data, cache, batch_size=2, device=torch.device("cpu"), progress=False, shard_rows=2)
    assert encoded == 5 and model.encode_calls == 5 and len(records) == 6
    with torch.no_grad():
        expected = model.encode_images(torch.stack([data.items[i]["pixel_values"] for i in range(5)]))
    assert torch.allclose(cache.get([r["image_key"] for r in records[:5]]), expected, atol=1e-6)
    assert len(list(cache.dir.glob("shard-*.npy"))) == 3  # flushed every 2 rows
