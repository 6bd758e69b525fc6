import json

import pytest

from radgen.data.study import ImageRef, Study, read_manifest, write_manifest
from radgen.errors import DataError


def _study(i: int) -> Study:
    return Study(
        study_id=f"s{i}", subject_id=str(i), split="train", source="test",
        images=[ImageRef("a.png", "PA"), ImageRef("/abs/b.png", "LATERAL")],
        sections={"findings": "Heart normal. ünïcode XXXX.", "impression": ""},
        labels={"mesh": ["normal"], "chexpert": {"No Finding": 1}},
        meta={"regions": [{"label": "x", "box": [1, 2, 3, 4]}]},
    )


def test_manifest_round_trips_exactly(tmp_path):
    studies = [_study(i) for i in range(3)]
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, studies) == 3
    again = read_manifest(path)
    assert again == studies
    # Writing what was read gives the same bytes.
    write_manifest(tmp_path / "m2.jsonl", again)
    assert (tmp_path / "m2.jsonl").read_bytes() == path.read_bytes()


def test_duplicate_ids_rejected_and_nothing_written(tmp_path):
    path = tmp_path / "m.jsonl"
    with pytest.raises(DataError, match="duplicate study_id 's1'"):
        write_manifest(path, [_study(1), _study(1)])
    assert not path.exists()


def test_failed_write_keeps_previous_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, [_study(1)])
    before = path.read_bytes()

    class Boom(Study):
        def to_dict(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_manifest(path, [_study(2), Boom(study_id="x")])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temp file left behind


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_study(1).to_dict()) + "\n{not json\n")
    with pytest.raises(DataError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(path)
    path.write_text(json.dumps({"study_id": "a", "bogus": 1}) + "\n")
    with pytest.raises(DataError, match=r"study 1: .*unknown keys \['bogus'\]"):
        read_manifest(path)


def test_report_sections_and_paths(tmp_path):
    study = _study(1)
    study.sections["impression"] = "No acute disease."
    assert study.report("both") == "Heart normal. ünïcode XXXX. No acute disease."
    assert study.image_paths(tmp_path) == [tmp_path / "a.png", tmp_path.root and __import__("pathlib").Path("/abs/b.png")]
    with pytest.raises(DataError, match="unknown report section"):
        study.report("history")
