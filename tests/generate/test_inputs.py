"""radgen.generate.inputs: a folder's frontal and lateral files of one study become one study."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

import radgen
from radgen.cli import main
from radgen.generate.inputs import collect_inputs, view_from_name
from tests.oneline_fixtures import dicom_dataset, radiograph_array, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def _png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(radiograph_array(seed=seed)).save(path)


def _dicom(path, view: str, study_uid: str, seed: int) -> None:
    import pydicom

    ds = dicom_dataset(radiograph_array(seed=seed))
    ds.ViewPosition, ds.StudyInstanceUID = view, study_uid
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("name, expected", [
    ("iu-3321_PA.png", ("PA", "iu-3321")), ("iu-3321_LATERAL.png", ("LATERAL", "iu-3321")), ("PA.png", ("PA", "")),
    ("chest_pa_1.jpg", ("PA", "chest_1")), ("x-lat.dcm", ("LATERAL", "x")), ("ll.png", ("LL", "")), ("AP", ("AP", "")),
    ("pa_ap.png", ("UNKNOWN", "pa_ap")),  # two view words: no view
    ("path.png", ("UNKNOWN", "path")), ("lateralis.png", ("UNKNOWN", "lateralis")),  # whole words only
])
def test_a_view_word_in_a_file_name(name, expected):
    assert view_from_name(name) == expected


def test_a_frontal_and_a_lateral_of_one_study_become_one_study(tmp_path):
    _png(tmp_path / "iu-1_PA.png", 1)
    _png(tmp_path / "iu-1_LATERAL.png", 2)
    _png(tmp_path / "p2" / "pa.png", 3)
    _png(tmp_path / "p2" / "lat.png", 4)
    _png(tmp_path / "x_PA.png", 5)  # a frontal alone
    _png(tmp_path / "two_PA.png", 6)  # two frontals, no lateral: two studies
    _png(tmp_path / "two_AP.png", 7)
    _png(tmp_path / "other" / "iu-1_LATERAL.png", 8)  # another folder: not iu-1's lateral
    _dicom(tmp_path / "d" / "IM1", "PA", "1.2.3", 9)  # DICOM: ViewPosition and StudyInstanceUID, whatever the names
    _dicom(tmp_path / "d" / "IM2", "LL", "1.2.3", 10)
    _dicom(tmp_path / "d" / "IM3", "PA", "1.2.4", 11)

    inputs = collect_inputs(tmp_path)
    studies = {s.study_id: [(ref.path, ref.view) for ref in s.images] for s in inputs.studies}
    assert studies == {
        "iu-1": [("iu-1_PA.png", "PA"), ("iu-1_LATERAL.png", "LATERAL")],
        "two_AP.png": [("two_AP.png", "AP")], "two_PA.png": [("two_PA.png", "PA")], "x_PA.png": [("x_PA.png", "PA")],
        "d/IM1": [("d/IM1", "PA"), ("d/IM2", "LL")], "d/IM3": [("d/IM3", "PA")],
        "other/iu-1_LATERAL.png": [("other/iu-1_LATERAL.png", "LATERAL")],
        "p2": [("p2/pa.png", "PA"), ("p2/lat.png", "LATERAL")],
    }
    assert inputs.paired == 3

    alone = collect_inputs(tmp_path, pair_views=False)
    assert len(alone.studies) == 11 and alone.paired == 0
    assert all(len(s.images) == 1 and s.study_id == s.images[0].path and s.images[0].view == "UNKNOWN" for s in alone.studies)


def test_generate_on_a_folder_gives_the_finding_head_both_views(model_dir, tmp_path, capsys):
    scans = tmp_path / "scans"
    _png(scans / "s1_PA.png", 1)
    _png(scans / "s1_LAT.png", 2)
    out = tmp_path / "preds.jsonl"
    assert main(["generate", str(scans), "--model", str(model_dir), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert "(1 of the 1 studies a frontal + lateral pair)" in capsys.readouterr().out
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    pipe = radgen.load(str(model_dir), device="cpu")
    both, front_only = pipe(scans / "s1_PA.png", lateral=scans / "s1_LAT.png"), pipe(scans / "s1_PA.png")
    assert both["finding_probs"] != front_only["finding_probs"]  # the lateral moves the head's answer
    assert row["study_id"] == "s1" and row["finding_probs"] == pytest.approx(both["finding_probs"], abs=1e-5)

    alone = tmp_path / "alone.jsonl"
    assert main(["generate", str(scans), "--model", str(model_dir), "--out", str(alone), "--device", "cpu", "--no-progress",
                 "--one-study-per-image"]) == 0
    rows = {r["study_id"]: r for r in map(json.loads, alone.read_text().splitlines())}
    assert sorted(rows) == ["s1_LAT.png", "s1_PA.png"]
    assert rows["s1_PA.png"]["finding_probs"] == pytest.approx(front_only["finding_probs"], abs=1e-5)
