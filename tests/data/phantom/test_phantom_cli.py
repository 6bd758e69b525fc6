"""`radgen data phantom`: manifest in → PNGs + phantom manifest out, labels-only mode, errors."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from radgen.data.phantom import cli
from radgen.data.study import Study, read_manifest, write_manifest
from radgen.errors import DataError
from radgen.labels.mesh import mesh_to_chexpert


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="radgen data")
    cli.register(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _studies() -> list[Study]:
    return [
        Study(
            study_id="iu-1", subject_id="1", split="train", source="iu-xray-kaggle",
            sections={"findings": "The heart is normal in size. The lungs are clear.", "impression": "Normal chest."},
            labels={"mesh": ["normal"]}, meta={"uid": "1"},
        ),
        Study(
            study_id="iu-2", subject_id="2", split="test", source="iu-xray-kaggle",
            sections={"findings": "Borderline cardiomegaly. Small right pleural effusion.", "impression": "Effusion."},
            labels={"mesh": ["Cardiomegaly/borderline", "Pleural Effusion/right/small", "Sulcus/left"]},
        ),
        Study(
            study_id="iu/3 odd id", subject_id="3", split="val", source="iu-xray-kaggle",
            sections={"findings": "Left subclavian catheter.", "impression": ""},
            labels={"mesh": "Catheters, Indwelling/left;Calcified Granuloma/lung/upper lobe/right"},
        ),
    ]


def test_manifest_round_trip_keeps_reports_and_maps_labels(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    write_manifest(source, _studies())
    out = tmp_path / "phantom"
    assert _run(["phantom", "--manifest", str(source), "--out", str(out), "--size", "96", "--workers", "2", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "rendered 3 studies (6 images, 96px)" in printed
    assert "unrenderable terms: 1" in printed and "Sulcus (1)" in printed

    rendered = read_manifest(out / "manifest.jsonl")
    assert [s.study_id for s in rendered] == ["iu-1", "iu-2", "iu/3 odd id"]
    for original, study in zip(_studies(), rendered):
        assert study.sections == original.sections and study.split == original.split
        assert study.subject_id == original.subject_id
        assert [ref.view for ref in study.images] == ["PA", "LATERAL"]
        mesh = original.labels["mesh"]
        mesh = mesh.split(";") if isinstance(mesh, str) else mesh
        assert study.labels["mesh"] == mesh
        assert study.labels["chexpert"] == mesh_to_chexpert(mesh)
        assert study.source == "phantom/iu-xray-kaggle"
        truth = study.meta["phantom"]
        assert set(truth["images"]) == {ref.path for ref in study.images}
        for ref, path in zip(study.images, study.image_paths(out)):
            with Image.open(path) as image:
                assert image.mode == "L" and image.size == (96, 96)
            for mark in truth["images"][ref.path]:
                x0, y0, x1, y1 = mark["box"]
                assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
                assert set(mark) == {"term", "observation", "laterality", "box"}
    assert rendered[0].meta["uid"] == "1"  # the input's meta is kept
    assert rendered[1].meta["phantom"]["unrenderable"] == ["Sulcus/left"]
    observations = {m["observation"] for m in rendered[1].meta["phantom"]["images"][rendered[1].images[0].path]}
    assert observations == {"Cardiomegaly", "Pleural Effusion"}
    # Same seed, one worker instead of two: identical bytes.
    again = tmp_path / "again"
    _run(["phantom", "--manifest", str(source), "--out", str(again), "--size", "96", "--workers", "1", "--seed", "5"])
    for study in rendered:
        for ref in study.images:
            assert (out / ref.path).read_bytes() == (again / ref.path).read_bytes()


def test_labels_only_mode_with_limit(tmp_path, capsys):
    labels = tmp_path / "labels.jsonl"
    rows = [{"id": f"s{i}", "mesh": terms} for i, terms in enumerate([["Nodule/lung/lower lobe/left"], "Emphysema;Scoliosis/right", ["normal"]])]
    labels.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    assert _run(["phantom", "--labels-only", str(labels), "--out", str(out), "--size", "80", "--limit", "2", "--workers", "1"]) == 0
    rendered = read_manifest(out / "manifest.jsonl")
    assert [s.study_id for s in rendered] == ["s0", "s1"]
    assert rendered[1].labels["mesh"] == ["Emphysema", "Scoliosis/right"]
    assert all(s.split in ("train", "val", "test") and s.sections == {} for s in rendered)
    assert "unrenderable terms: 0" in capsys.readouterr().out


def test_bad_label_rows_give_one_line_errors(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "a"}\n')
    with pytest.raises(DataError, match=r"labels.jsonl:1: .*'id' and 'mesh'"):
        _run(["phantom", "--labels-only", str(labels), "--out", str(tmp_path / "o")])
    with pytest.raises(DataError, match="not found"):
        _run(["phantom", "--manifest", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    labels.write_text('{"id": "a", "mesh": ["normal"]}\n')
    with pytest.raises(DataError, match="--size"):
        _run(["phantom", "--labels-only", str(labels), "--out", str(tmp_path / "o"), "--size", "8"])
