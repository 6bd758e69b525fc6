"""Malformed dataset inputs: one-line errors naming file and row; image paths outside the root refused."""

from __future__ import annotations

import json

import pytest

from radgen.data.adapters import prepare
from radgen.data.adapters.common import OUTSIDE_ROOT, path_under, read_csv_rows
from radgen.errors import DataError

from .builders import build_iu_kaggle, build_iu_r2gen, write_png


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("image_path,kind", [("CXR1_IM-0001-4001.png", "str"), (7, "int"), ([3, "a.png"], "list"), ({"a": 1}, "dict")])
def test_r2gen_image_path_must_be_a_list_of_names(tmp_path, image_path, kind):
    root = build_iu_r2gen(tmp_path / "iu")
    annotation = json.loads((root / "annotation.json").read_text())
    annotation["train"][1]["image_path"] = image_path
    (root / "annotation.json").write_text(json.dumps(annotation))
    with pytest.raises(DataError) as err:
        prepare("iu-xray-r2gen", root)
    assert _one_line(err).startswith(f"{root / 'annotation.json'}: train[1] (id '2'): 'image_path' must be a list")
    assert f"got {kind}" in str(err.value)


CSV_PROBLEMS = {
    "unterminated quote": ('uid,findings\n1,"clear lungs\n2,normal\n', "line 2: malformed CSV (unexpected end of data)"),
    "stray quote": ('uid,findings\n1,ok\n2,"a"b\n', "line 3: malformed CSV"),
    "too many fields": ("uid,findings\n1,ok\n2,clear, no effusion\n", "line 3: 3 fields, the header has 2"),
    "too few fields": ("uid,findings\n1\n", "line 2: 1 fields, the header has 2"),
    "duplicate header": ("uid,findings,findings\n1,a,b\n", "line 1: column(s) 'findings' appear more than once"),
}


@pytest.mark.parametrize("problem", list(CSV_PROBLEMS))
def test_malformed_csv_is_a_one_line_error_naming_the_line(tmp_path, problem):
    text, message = CSV_PROBLEMS[problem]
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_csv_rows(path)
    assert _one_line(err).startswith(f"{path}: ") and message in str(err.value)


def test_well_formed_csv_with_quotes_and_blank_lines_still_reads(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('uid,findings\n1,"clear, no effusion"\n\n2,"two\nlines"\n')
    assert read_csv_rows(path, required=("uid",)) == [{"uid": "1", "findings": "clear, no effusion"}, {"uid": "2", "findings": "two\nlines"}]


def test_ragged_row_in_a_real_adapter_names_the_file(tmp_path):
    root = build_iu_kaggle(tmp_path / "iu")
    with (root / "indiana_projections.csv").open("a") as handle:
        handle.write("99,extra.png,Frontal,surplus\n")
    with pytest.raises(DataError, match=r"indiana_projections\.csv: line \d+: 4 fields, the header has 3"):
        prepare("iu-xray-kaggle", root)


def test_path_under():
    assert path_under("/data/iu", "images/a.png") == "/data/iu/images/a.png"
    assert path_under("/data/iu", "a/../b.png") == "/data/iu/b.png"
    assert path_under("/data/iu", "../../etc/passwd") is None
    assert path_under("/data/iu", "/etc/passwd") is None
    assert path_under("/data/iu", "/scans/a.png", allow_absolute=True) == "/scans/a.png"
    assert path_under("/data/iu", "../iu-other/a.png") is None  # a sibling sharing the prefix is still outside


def test_paths_outside_the_root_are_refused_not_counted_as_images(tmp_path):
    root = build_iu_r2gen(tmp_path / "iu")
    annotation = json.loads((root / "annotation.json").read_text())
    annotation["train"][1]["image_path"] = ["../../../../../../etc/passwd"]
    (root / "annotation.json").write_text(json.dumps(annotation))
    result = prepare("iu-xray-r2gen", root)
    assert result.skipped[OUTSIDE_ROOT] == 1
    assert "iu-2" not in {study.study_id for study in result.studies}
    assert all("passwd" not in ref.path for study in result.studies for ref in study.images)
    assert any(OUTSIDE_ROOT in line and "train[1]" in line for line in result.report_lines())


def test_generic_and_rrg24_refuse_climbing_paths_but_keep_absolute_ones(tmp_path):
    table = tmp_path / "set" / "table.csv"
    write_png(tmp_path / "set" / "a.png")
    elsewhere = write_png(tmp_path / "scans" / "b.png")
    table.write_text(f"study_id,image,findings\ns1,a.png,ok\ns2,../scans/b.png,ok\ns3,{elsewhere},ok\n")
    result = prepare("manifest", table)
    assert {s.study_id for s in result.studies} == {"s1", "s3"} and result.skipped[OUTSIDE_ROOT] == 1
    rrg = tmp_path / "rrg"
    rrg.mkdir()
    (rrg / "train.json").write_text(json.dumps([{"id": "r1", "images_path": ["../scans/b.png"], "findings": "ok"},
                                                {"id": "r2", "images_path": [str(elsewhere)], "findings": "ok"}]))
    result = prepare("rrg24", rrg)
    assert [s.study_id for s in result.studies] == ["r2"] and result.skipped[OUTSIDE_ROOT] == 1


def test_generic_jsonl_non_string_image_is_an_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"study_id": "a", "findings": "ok", "image": 12}) + "\n")
    with pytest.raises(DataError) as err:
        prepare("manifest", path)
    assert _one_line(err).startswith(f"{path}:1: 'image' must be a string or a list of strings, got int")
