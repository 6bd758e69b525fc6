"""ROCO, RRG24-style JSON and the generic manifest adapter on generated files."""

import json
from collections import Counter

import pytest

from radgen.data.adapters import prepare
from radgen.errors import DataError

from .builders import write_csv, write_png


def _by_id(result):
    return {study.study_id: study for study in result.studies}


def test_roco_csv_and_captions_txt_layouts(tmp_path):
    root = tmp_path / "roco"
    write_csv(root / "train" / "radiology" / "traindata.csv", ["id", "name", "caption"], [
        ["ROCO_00001", "PMC1_a.jpg", "CT of the chest showing   a mass."],
        ["ROCO_00002", "PMC2_b.jpg", "Chest X-ray, no abnormality."],
        ["ROCO_00001", "PMC1_a.jpg", "duplicate row"],
    ])
    write_png(root / "train" / "radiology" / "images" / "PMC1_a.jpg")
    write_csv(root / "train" / "radiology" / "keywords.csv", ["id", "keyword"], [["ROCO_00001", "mass"]])  # not a caption file
    (root / "validation" / "radiology" / "images").mkdir(parents=True)
    (root / "validation" / "radiology" / "captions.txt").write_text("ROCO_00010\t MRI of the knee.\nROCO_00011\t\n", encoding="utf-8")
    (root / "validation" / "radiology" / "dlinks.txt").write_text("ROCO_00010\twget http://x\tPMC10_k.jpg\n", encoding="utf-8")
    write_png(root / "validation" / "radiology" / "images" / "PMC10_k.jpg")
    (root / "train" / "non-radiology").mkdir(parents=True)
    (root / "train" / "non-radiology" / "captions.txt").write_text("ROCO_90000\t A photo.\n", encoding="utf-8")
    result = prepare("roco", root)
    studies = _by_id(result)
    assert set(studies) == {"ROCO_00001", "ROCO_00002", "ROCO_00010"}
    assert studies["ROCO_00001"].findings == "CT of the chest showing a mass."
    assert studies["ROCO_00001"].split == "train" and studies["ROCO_00010"].split == "val"
    assert studies["ROCO_00010"].images[0].path.endswith("validation/radiology/images/PMC10_k.jpg")
    assert studies["ROCO_00002"].images == []  # image file absent → text-only, counted
    assert result.skipped == Counter({"duplicate ROCO id": 1, "no findings or impression text": 1, "ROCO non-radiology subset": 1})
    assert result.notes["text-only: image files missing"] == 1


def test_rrg24_json_with_several_images_and_split_keys(tmp_path):
    root = tmp_path / "rrg"
    for name in ("a/1.jpg", "a/2.jpg", "b/1.jpg"):
        write_png(root / name)
    (root / "rrg24.json").write_text(json.dumps({
        "train": [
            {"id": "st1", "images_path": ["a/1.jpg", "a/2.jpg"], "views": ["PA", "LATERAL"], "findings": "Clear lungs.", "impression": "Normal.", "source": "CheXpert"},
            {"id": "st2", "images_path": ["b/1.jpg"], "findings": "", "impression": "Cardiomegaly."},
            {"id": "st1", "images_path": [], "findings": "dup"},
        ],
        "validate": [{"study_id": "st3", "images": [{"bytes": "..."}], "findings": "x"}],
    }), encoding="utf-8")
    (root / "test.jsonl").write_text(json.dumps({"id": "st9", "image_path": "a/1.jpg", "impression": "Stable."}) + "\n\n", encoding="utf-8")
    result = prepare("rrg24", root, section="impression")
    studies = _by_id(result)
    assert set(studies) == {"st1", "st2", "st9"}
    assert [ref.view for ref in studies["st1"].images] == ["PA", "LATERAL"]
    assert studies["st1"].meta == {"dataset": "CheXpert"} and studies["st1"].split == "train"
    assert studies["st9"].split == "test" and len(studies["st9"].images) == 1
    assert result.skipped == Counter({"duplicate study id": 1, "image entries are not path strings (embedded images are not supported)": 1})
    (root / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        prepare("rrg24", root)


def test_generic_csv_merges_rows_and_keeps_text_only(tmp_path):
    write_png(tmp_path / "img" / "a1.png")
    write_png(tmp_path / "img" / "a2.png")
    table = write_csv(tmp_path / "table.csv", ["study_id", "image", "view", "report", "impression", "split"], [
        ["A", "img/a1.png", "PA", "Heart normal.", "", "train"],
        ["A", "img/a2.png", "lateral", "", "", ""],
        ["B", "", "", "Lungs clear.", "", "test"],
        ["C", "img/c.png", "PA", "", "", ""],
    ])
    result = prepare("manifest", table)
    studies = _by_id(result)
    assert set(studies) == {"A", "B"}
    assert [ref.view for ref in studies["A"].images] == ["PA", "LATERAL"]
    assert studies["A"].findings == "Heart normal." and studies["A"].split == "train"
    assert studies["B"].images == [] and studies["B"].split == "test"
    assert result.notes["text-only: study lists no images"] == 1
    assert result.notes["built from several rows with the same study_id"] == 1
    assert result.skipped == Counter({"no findings or impression text": 1})


def test_generic_jsonl_manifest_lines_and_flat_rows(tmp_path):
    write_png(tmp_path / "x.png")
    lines = [
        {"study_id": "m1", "images": [{"path": "x.png", "view": "AP"}], "sections": {"findings": "Normal."}, "split": "val", "labels": {"k": 1}},
        {"id": "f1", "images": ["x.png"], "findings": "Flat row.", "subject_id": 7},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    studies = _by_id(prepare("manifest", path))
    assert studies["m1"].images[0].view == "AP" and studies["m1"].labels == {"k": 1} and studies["m1"].split == "val"
    assert studies["f1"].subject_id == "7" and studies["f1"].findings == "Flat row."
    path.write_text('{"study_id": "m1"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl:2: not valid JSON"):
        prepare("manifest", path)


def test_generic_folder_of_images_and_reports(tmp_path):
    root = tmp_path / "folder"
    write_png(root / "case1.png")
    write_png(root / "case1_lat.png")
    (root / "case1.txt").write_text("FINDINGS: Normal heart.\nIMPRESSION: Normal.", encoding="utf-8")
    write_png(root / "case2" / "front.png")
    (root / "case2" / "report.txt").write_text("Clear lungs.", encoding="utf-8")
    (root / "case3.txt").write_text("Text only report.", encoding="utf-8")
    (root / "case4.txt").write_bytes("Cardiomégalie.".encode("latin-1"))
    result = prepare("manifest", root)
    studies = _by_id(result)
    assert set(studies) == {"case1", "case2", "case3"}
    assert len(studies["case1"].images) == 2 and studies["case1"].impression == "Normal."
    assert studies["case2"].findings == "Clear lungs." and len(studies["case2"].images) == 1
    assert studies["case3"].images == []
    assert result.skipped == Counter({"report not valid UTF-8": 1})
