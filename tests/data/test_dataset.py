"""StudyDataset and collate_studies: image modes, keys, cache, text-only, DataLoader workers."""

import hashlib

import pytest
import torch
from torch.utils.data import DataLoader

from radgen.data.dataset import StudyDataset, collate_studies
from radgen.data.images import ImageTransform
from radgen.data.study import ImageRef, Study, write_manifest
from radgen.errors import DataError

from .builders import write_png

TRANSFORM = ImageTransform(8, mean=(0.0,), std=(1.0,), channels=1)


def _studies(tmp_path):
    write_png(tmp_path / "lat.png", value=0, size=(10, 10))
    write_png(tmp_path / "pa.png", value=255, size=(10, 10))
    write_png(tmp_path / "b.png", value=51, size=(20, 10))
    return [
        Study("s1", images=[ImageRef("lat.png", "LATERAL"), ImageRef("pa.png", "PA")], sections={"findings": "Heart normal. 1. No effusion.", "impression": "Normal."}),
        Study("s2", images=[ImageRef(str(tmp_path / "b.png"), "UNKNOWN")], sections={"findings": "Lungs clear."}),
    ]


def test_first_frontal_item_and_collate(tmp_path):
    dataset = StudyDataset(_studies(tmp_path), TRANSFORM, root=tmp_path)
    item = dataset[0]
    assert item["study_id"] == "s1"
    assert item["report"] == "heart normal . no effusion ."  # r2gen-iu: '1. ' removed, punctuation stripped
    # first_frontal skips the lateral (value 0) and takes the PA (value 255) → 1.0 everywhere
    assert item["pixel_values"].shape == (1, 8, 8) and torch.allclose(item["pixel_values"], torch.ones(1, 8, 8))
    batch = collate_studies([dataset[0], dataset[1]])
    assert batch["study_ids"] == ["s1", "s2"] and batch["pixel_values"].shape == (2, 1, 8, 8)
    assert batch["reports"][1] == "lungs clear ."
    assert len(batch["image_keys"]) == 2 and batch["image_keys"][0] != batch["image_keys"][1]


def test_image_key_is_content_hash_plus_mode(tmp_path):
    studies = _studies(tmp_path)
    key = StudyDataset(studies, TRANSFORM, root=tmp_path)[0]["image_key"]
    expected = hashlib.sha1(("first_frontal:1:" + hashlib.sha1((tmp_path / "pa.png").read_bytes()).hexdigest()).encode()).hexdigest()
    assert key == expected
    assert StudyDataset(studies, TRANSFORM, root=tmp_path, images="stitch")[0]["image_key"] != key
    write_png(tmp_path / "pa.png", value=254, size=(10, 10))  # content changes → key changes
    assert StudyDataset(studies, TRANSFORM, root=tmp_path)[0]["image_key"] != key


def test_stitch_and_list_modes(tmp_path):
    studies = _studies(tmp_path)
    stitched = StudyDataset(studies, TRANSFORM, root=tmp_path, images="stitch")[0]["pixel_values"]
    # lateral (0) | PA (255) side by side, squashed to 8x8: left columns dark, right columns bright
    assert stitched[0, :, 0].max() < 0.05 and stitched[0, :, -1].min() > 0.95
    listed = StudyDataset(studies, TRANSFORM, root=tmp_path, images="list")
    assert listed[0]["pixel_values"].shape == (2, 1, 8, 8)
    batch = collate_studies([listed[0], listed[1]])
    assert batch["pixel_values"].shape == (2, 2, 1, 8, 8)
    assert batch["image_mask"].tolist() == [[True, True], [True, False]]
    only_pa = StudyDataset(studies[:1], TRANSFORM, root=tmp_path, images="list", views=("PA",))
    assert only_pa[0]["pixel_values"].shape == (1, 1, 8, 8)


def test_text_only_sections_cleaning_and_empty_reports(tmp_path):
    studies = _studies(tmp_path) + [Study("s3", sections={"impression": "Only impression."})]
    dataset = StudyDataset(studies, None, section="both", cleaning="clean", text_only=True)
    assert len(dataset) == 3
    assert dataset[0] == {"study_id": "s1", "report": "Heart normal. No effusion. Normal.", "finding_labels": None}
    assert collate_studies([dataset[0], dataset[2]]) == {"study_ids": ["s1", "s3"], "reports": ["Heart normal. No effusion. Normal.", "Only impression."],
                                                         "finding_labels": [None, None]}
    findings_only = StudyDataset(studies, None, section="findings", text_only=True)
    assert [s.study_id for s in findings_only.studies] == ["s1", "s2"] and findings_only.dropped_empty == 1


def test_bad_inputs_fail_early_with_one_line(tmp_path):
    studies = _studies(tmp_path) + [Study("s4", sections={"findings": "No image."})]
    with pytest.raises(DataError, match=r"1 studies have no usable image \(e\.g\. s4\).*text_only"):
        StudyDataset(studies, TRANSFORM, root=tmp_path)
    with pytest.raises(DataError, match="image_transform"):
        StudyDataset(studies, None)
    with pytest.raises(DataError, match="images mode"):
        StudyDataset(studies, TRANSFORM, images="grid")
    with pytest.raises(DataError, match="cleaning mode"):
        StudyDataset(studies, TRANSFORM, cleaning="r2gen")
    broken = [Study("s5", images=[ImageRef("gone.png", "PA")], sections={"findings": "x"})]
    with pytest.raises(DataError, match=r"gone\.png: image file not found"):
        StudyDataset(broken, TRANSFORM, root=tmp_path)[0]


def test_cache_and_manifest_path_and_workers(tmp_path):
    write_manifest(tmp_path / "m.jsonl", _studies(tmp_path))
    dataset = StudyDataset(tmp_path / "m.jsonl", TRANSFORM, cache_size=8)  # root = the manifest's folder
    first = dataset[0]["pixel_values"]
    assert torch.equal(dataset[0]["pixel_values"], first)
    assert dataset._cache.hits == 1 and dataset._cache.misses == 1
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_studies)
    batches = list(loader)
    assert len(batches) == 1 and batches[0]["pixel_values"].shape == (2, 1, 8, 8)
    assert batches[0]["study_ids"] == ["s1", "s2"]


def _multi_frontal(tmp_path):
    write_png(tmp_path / "pa.png", value=255, size=(10, 10))
    write_png(tmp_path / "ap.png", value=128, size=(10, 10))
    write_png(tmp_path / "lat.png", value=0, size=(10, 10))
    write_png(tmp_path / "other.png", value=64, size=(10, 10))
    return [
        Study("two-frontal", images=[ImageRef("lat.png", "LATERAL"), ImageRef("pa.png", "PA"), ImageRef("ap.png", "AP")],
              sections={"findings": "Heart normal."}, labels={"chexpert": {"Cardiomegaly": 0}}),
        Study("lateral-only", images=[ImageRef("lat.png", "LATERAL"), ImageRef("other.png", "LL")], sections={"findings": "Lungs clear."}),
        Study("no-report", images=[ImageRef("pa.png", "PA")], sections={"findings": ""}),
    ]


def test_each_frontal_gives_one_item_per_frontal_image(tmp_path):
    # seed 004 trains on each AP/PA image with its study's report
    dataset = StudyDataset(_multi_frontal(tmp_path), TRANSFORM, root=tmp_path, images="each_frontal")
    assert len(dataset) == 3  # 2 frontal images + the lateral-only study's first image; empty report dropped
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["study_id"] for item in items] == ["two-frontal", "two-frontal", "lateral-only"]
    assert [item["report"] for item in items] == ["heart normal .", "heart normal .", "lungs clear ."]
    assert [round(float(item["pixel_values"].mean()), 3) for item in items] == [1.0, round(128 / 255, 3), 0.0]
    assert items[0]["finding_labels"] == items[1]["finding_labels"] == {"Cardiomegaly": 0}
    # studies[i] is item i's study, so label/report walks over `studies` stay aligned with the items
    assert [s.study_id for s in dataset.studies] == ["two-frontal", "two-frontal", "lateral-only"]
    assert items[0]["image_key"] != items[1]["image_key"]
    # the same image gives the same key in first_frontal mode: one feature cache serves train and val
    assert StudyDataset(_multi_frontal(tmp_path), TRANSFORM, root=tmp_path)[0]["image_key"] == items[0]["image_key"]


def test_each_frontal_with_views_and_text_only(tmp_path):
    with pytest.raises(DataError, match="no usable image of views AP"):  # the lateral-only study has no AP image
        StudyDataset(_multi_frontal(tmp_path)[1:2], TRANSFORM, root=tmp_path, images="each_frontal", views=["AP"])
    only_ap = StudyDataset(_multi_frontal(tmp_path)[:1], TRANSFORM, root=tmp_path, images="each_frontal", views=["AP"])
    assert len(only_ap) == 1 and round(float(only_ap[0]["pixel_values"].mean()), 3) == round(128 / 255, 3)
    text = StudyDataset(_multi_frontal(tmp_path), None, images="each_frontal", text_only=True)
    assert [text[i]["study_id"] for i in range(len(text))] == ["two-frontal", "lateral-only"]  # no pixels: one per study


def test_each_frontal_is_a_recipe_mode_and_val_stays_per_study(tmp_path):
    from radgen.config import load_recipe
    from radgen.train.data import load_splits

    studies = _multi_frontal(tmp_path)[:1]
    val = Study("val-study", split="val", images=list(studies[0].images), sections={"findings": "Heart normal."})
    studies[0].split = "train"
    write_manifest(tmp_path / "manifest.jsonl", [studies[0], val])
    recipe = load_recipe("clipcap-prefix", size="tiny", overrides=[f"data.manifest={tmp_path / 'manifest.jsonl'}"])
    assert recipe.data.images == "each_frontal" and recipe.data.views == ["PA", "AP"]
    train, val_set = load_splits(recipe, TRANSFORM)
    assert len(train) == 2 and len(val_set) == 1  # PA and AP train separately; validation scores the study once
    assert val_set.images == "first_frontal"
    # generation writes one report per study too (predictions are keyed by study_id)
    from types import SimpleNamespace

    from radgen.generate.decode import generation_dataset

    generated = generation_dataset(SimpleNamespace(recipe=recipe, image_transform=TRANSFORM), [studies[0], val], tmp_path, "findings")
    assert [generated[i]["study_id"] for i in range(len(generated))] == ["two-frontal", "val-study"]
    # a loose file (`radgen generate scans/`: view UNKNOWN) is read by a recipe trained on PA/AP views,
    # while a file known to be a lateral is still left out
    loose = Study("scan.png", images=[ImageRef(path=studies[0].images[0].path, view="UNKNOWN")])
    lateral = Study("side.png", images=[ImageRef(path=studies[0].images[0].path, view="LATERAL")])
    model = SimpleNamespace(recipe=recipe, image_transform=TRANSFORM)
    assert generation_dataset(model, [loose], tmp_path, "findings")[0]["study_id"] == "scan.png"
    with pytest.raises(DataError, match="no usable image of views PA,AP"):
        generation_dataset(model, [lateral], tmp_path, "findings")
