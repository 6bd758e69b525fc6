"""MIMIC-CXR and IU X-Ray adapters on generated folders: parsing, views, splits, skip counts."""

from collections import Counter

import pytest

from radgen.data.adapters import prepare
from radgen.data.adapters.common import assign_splits
from radgen.data.study import Study
from radgen.errors import DataError

from .builders import build_iu_kaggle, build_iu_openi, build_iu_r2gen, build_mimic, write_csv


def _by_id(result):
    return {study.study_id: study for study in result.studies}


# ------------------------------------------------------------------------------------------ MIMIC


def test_mimic_parses_studies_sections_views_and_official_split(tmp_path):
    result = prepare("mimic-cxr", build_mimic(tmp_path / "mimic"))
    studies = _by_id(result)
    # 7 studies listed; one has no report file, one a latin-1 report: both dropped and counted.
    assert result.skipped == Counter({"report file missing": 1, "report not valid UTF-8": 1})
    assert set(studies) == {"s50414267", "s53189527", "s57375967", "s51111111", "s53333333"}
    first = studies["s50414267"]
    assert first.subject_id == "10000032" and first.split == "train" and first.source == "mimic-cxr"
    assert [ref.view for ref in first.images] == ["PA", "LATERAL"]
    assert first.images[0].path.endswith("files/p10/p10000032/s50414267/d1.jpg")
    assert first.sections == {"indication": "___F with cough", "findings": "The lungs are clear. No pleural effusion.", "impression": "No acute process."}
    assert studies["s57375967"].split == "val"  # "validate" in the official file
    assert studies["s53189527"].sections == {"findings": "Heart size normal. Lungs clear."}
    assert studies["s53189527"].meta["sections_from"] == "headers"
    no_header = studies["s53333333"]
    assert no_header.sections == {"findings": "PA and lateral views of the chest. No acute cardiopulmonary process."}
    assert no_header.meta["sections_from"] == "no_header"
    # Its only image file is absent: kept as a text-only study, counted, path remembered.
    assert no_header.images == [] and no_header.meta["missing_images"][0]["path"].endswith("d8.jpg")
    assert no_header.meta["missing_images"][0]["view"] == "PA"
    assert result.notes["text-only: image files missing"] == 1


def test_mimic_valid_image_findings_pairs_with_ap_pa_views(tmp_path):
    result = prepare("mimic-cxr", build_mimic(tmp_path / "mimic"), views="PA,AP", section="findings", require_images=True)
    studies = _by_id(result)
    assert set(studies) == {"s50414267", "s53189527"}
    assert [ref.view for ref in studies["s50414267"].images] == ["PA"]
    assert result.skipped == Counter({
        "report file missing": 1,
        "report not valid UTF-8": 1,
        "empty findings": 1,                      # impression-only report
        "no image with view in PA,AP": 1,         # lateral-only study
        "no image file found": 1,                 # image listed but not on disk
    })
    lines = result.report_lines()
    assert any(line.startswith("warning: skipped 1 studies: no image with view in PA,AP (e.g. s57375967)") for line in lines)


def test_mimic_image_without_metadata_gets_unknown_view(tmp_path):
    root = build_mimic(tmp_path / "mimic")
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "ViewPosition"], [["d1", "PA"], ["d2", "LATERAL"]], gz=True)
    result = prepare("mimic-cxr", root)
    studies = _by_id(result)
    assert [ref.view for ref in studies["s53189527"].images] == ["UNKNOWN"]
    # studies s53189527, s57375967, s51111111, s53333333 have images missing from the metadata file
    assert result.notes["image(s) not in the metadata file (view UNKNOWN)"] == 4


def test_mimic_missing_index_files_are_clear_errors(tmp_path):
    root = build_mimic(tmp_path / "mimic")
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError, match="metadata.csv.gz: not found"):
        prepare("mimic-cxr", root)


# ------------------------------------------------------------------------------------------ IU Kaggle


def test_iu_kaggle_labels_views_text_only_and_skips(tmp_path):
    result = prepare("iu-xray-kaggle", build_iu_kaggle(tmp_path / "iu"))
    studies = _by_id(result)
    assert result.skipped == Counter({"no findings or impression text": 1})  # uid 4
    assert set(studies) == {"iu-1", "iu-2", "iu-3", "iu-5", "iu-6"}
    one = studies["iu-1"]
    assert [(ref.path.rsplit("/", 1)[1], ref.view) for ref in one.images] == [("1_IM-0001-4001.dcm.png", "FRONTAL"), ("1_IM-0001-3001.dcm.png", "LATERAL")]
    assert one.sections == {"findings": "The heart is normal. The lungs are clear.", "impression": "Normal chest x-XXXX.", "indication": "Cough.", "comparison": "None."}
    assert one.labels["mesh"] == ["normal"] and one.labels["chexpert"] == {"No Finding": 1}
    two = studies["iu-2"]
    assert two.labels["mesh"] == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]
    assert two.labels["chexpert"] == {"Cardiomegaly": 1}
    assert studies["iu-3"].labels["chexpert"] == {"Lung Opacity": 1, "Pleural Effusion": 1}
    # uid 2 lost one of two images (kept with the other); uids 3 and 5 lost all → text-only.
    assert [ref.view for ref in two.images] == ["FRONTAL"]
    assert studies["iu-3"].images == [] and studies["iu-5"].images == []
    assert result.notes["text-only: image files missing"] == 2
    assert result.notes["image files missing (study kept with the others)"] == 1
    assert all(study.split in ("train", "val", "test") for study in result.studies)


def test_iu_kaggle_split_is_deterministic_and_seeded(tmp_path):
    root = build_iu_kaggle(tmp_path / "iu", images=False)
    first = {s.study_id: s.split for s in prepare("iu-xray-kaggle", root, split_ratio="0.6,0.2,0.2", seed=3).studies}
    again = {s.study_id: s.split for s in prepare("iu-xray-kaggle", root, split_ratio="0.6,0.2,0.2", seed=3).studies}
    assert first == again
    # 5 subjects at 0.6/0.2/0.2 → 3/1/1
    assert sorted(Counter(first.values()).values()) == [1, 1, 3]
    with pytest.raises(DataError, match="summing to 1"):
        prepare("iu-xray-kaggle", root, split_ratio="0.5,0.1,0.1")


def test_assign_splits_groups_subjects_and_depends_on_seed():
    studies = [Study(study_id=f"s{i}", subject_id=f"p{i // 2}") for i in range(40)]  # 20 subjects, 2 studies each
    assert assign_splits(studies, (0.5, 0.25, 0.25), seed=1) == 40
    by_subject = {}
    for study in studies:
        by_subject.setdefault(study.subject_id, set()).add(study.split)
    assert all(len(splits) == 1 for splits in by_subject.values())
    assert Counter(study.split for study in studies) == Counter({"train": 20, "val": 10, "test": 10})
    other = [Study(study_id=f"s{i}", subject_id=f"p{i // 2}") for i in range(40)]
    assign_splits(other, (0.5, 0.25, 0.25), seed=2)
    assert [s.split for s in other] != [s.split for s in studies]
    # Studies that already have a split are left alone.
    fixed = [Study(study_id="a", split="test")]
    assert assign_splits(fixed, (1.0, 0.0, 0.0), seed=0) == 0 and fixed[0].split == "test"


# ------------------------------------------------------------------------------------------ IU R2Gen


def test_iu_r2gen_keeps_split_and_report_as_findings(tmp_path):
    result = prepare("iu-xray-r2gen", build_iu_r2gen(tmp_path / "r2gen"))
    studies = _by_id(result)
    assert {sid: s.split for sid, s in studies.items()} == {"iu-1": "train", "iu-2": "train", "iu-5": "val", "iu-6": "test"}
    assert studies["iu-1"].findings == "The heart is normal. The lungs are clear. Normal chest x-XXXX."
    assert studies["iu-1"].labels == {}  # no indiana_reports.csv beside it
    assert len(studies["iu-1"].images) == 2
    assert studies["iu-6"].meta["r2gen_id"] == "CXR6_IM-2192" and studies["iu-6"].images[0].path.endswith("CXR6_IM-2192/0.png")
    assert studies["iu-2"].images == [] and studies["iu-5"].images == []
    assert result.notes["text-only: image files missing"] == 2
    assert not result.skipped


def test_iu_r2gen_attaches_mesh_and_views_from_csv(tmp_path):
    studies = _by_id(prepare("iu-xray-r2gen", build_iu_r2gen(tmp_path / "r2gen", with_csv=True)))
    assert studies["iu-2"].labels["chexpert"] == {"Cardiomegaly": 1}
    assert studies["iu-1"].sections["indication"] == "Cough."
    assert [ref.view for ref in studies["iu-1"].images] == ["FRONTAL", "LATERAL"]


def test_iu_r2gen_bad_annotation(tmp_path):
    (tmp_path / "annotation.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"annotation.json: not valid JSON"):
        prepare("iu-xray-r2gen", tmp_path)
    (tmp_path / "annotation.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="'train'/'val'/'test'"):
        prepare("iu-xray-r2gen", tmp_path)


# ------------------------------------------------------------------------------------------ IU Open-I


def test_iu_openi_xml(tmp_path):
    result = prepare("iu-xray-openi", build_iu_openi(tmp_path / "openi"), seed=0)
    studies = _by_id(result)
    assert set(studies) == {"iu-1", "iu-7"}
    assert result.skipped["XML not well-formed"] == 1
    assert result.skipped["no findings or impression text"] == 1  # report 8
    one = studies["iu-1"]
    assert one.sections == {"findings": "The heart is normal. Lungs clear.", "impression": "Normal chest.", "indication": "Chest pain", "comparison": "None."}
    assert [ref.path.rsplit("/", 1)[1] for ref in one.images] == ["CXR1_1_IM-0001-4001.png"]  # the -3001 file is absent
    seven = studies["iu-7"]
    assert seven.labels["mesh"] == ["Cardiomegaly/mild", "Calcinosis/aorta"]
    assert seven.labels["chexpert"] == {"Cardiomegaly": 1}
    assert seven.split in ("train", "val", "test")


def test_unknown_format_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="unknown dataset format 'chexpert'.*iu-xray-kaggle"):
        prepare("chexpert", tmp_path)
    with pytest.raises(DataError, match="not found"):
        prepare("iu-xray-kaggle", tmp_path / "absent")
    with pytest.raises(DataError, match="indiana_reports.csv: not found"):
        prepare("iu-xray-kaggle", tmp_path)
