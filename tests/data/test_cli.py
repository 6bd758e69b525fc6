"""`radgen data prepare` and `radgen data stats` through radgen.cli.main on generated folders."""

import json
from collections import Counter

from radgen.cli import main
from radgen.data import cli as data_cli
from radgen.data.study import read_manifest

from .builders import build_iu_kaggle, build_mimic


def test_prepare_iu_kaggle_writes_manifest_and_reports_counts(tmp_path, capsys):
    root = build_iu_kaggle(tmp_path / "iu")
    out = root / "manifest.jsonl"
    assert main(["data", "prepare", "--format", "iu-xray-kaggle", "--root", str(root), "--out", str(out), "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "wrote 5 studies" in captured.out and "2 text-only" in captured.out and "1 skipped" in captured.out
    assert "warning: skipped 1 studies: no findings or impression text (e.g. iu-4)" in captured.err
    assert "warning: 2 studies kept as text-only" in captured.err and "--require-images" in captured.err
    studies = read_manifest(out)
    assert [s.study_id for s in studies] == ["iu-1", "iu-2", "iu-3", "iu-5", "iu-6"]
    # Images under the manifest's folder are stored relative to it.
    assert studies[0].images[0].path == "images/images_normalized/1_IM-0001-4001.dcm.png"
    assert (out.parent / studies[0].images[0].path).is_file()


def test_prepare_mimic_with_filters(tmp_path, capsys):
    root = build_mimic(tmp_path / "mimic")
    out = tmp_path / "out" / "mimic.jsonl"
    code = main(["data", "prepare", "--format", "mimic-cxr", "--root", str(root), "--out", str(out),
                 "--views", "PA,AP", "--section", "findings", "--require-images"])
    assert code == 0
    assert [s.study_id for s in read_manifest(out)] == ["s50414267", "s53189527"]
    assert "no image with view in PA,AP" in capsys.readouterr().err


def test_prepare_errors_are_one_line_and_leave_old_manifest(tmp_path, capsys):
    out = tmp_path / "keep.jsonl"
    out.write_text('{"study_id": "old"}\n', encoding="utf-8")
    assert main(["data", "prepare", "--format", "iu-xray-kaggle", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("radgen: error:") and "nowhere" in err and len(err.splitlines()) == 1
    assert out.read_text(encoding="utf-8") == '{"study_id": "old"}\n'
    empty = tmp_path / "empty"
    build_iu_kaggle(empty, images=False)
    code = main(["data", "prepare", "--format", "iu-xray-kaggle", "--root", str(empty), "--out", str(out), "--require-images"])
    assert code == 2 and "no studies left" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == '{"study_id": "old"}\n'
    assert main(["data", "prepare", "--format", "iu-xray-kaggle", "--root", str(empty), "--out", str(out), "--views", "SIDEWAYS"]) == 2
    assert "unknown view(s) SIDEWAYS" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "iu-xray-kaggle", "--root", str(empty), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_stats_text_json_and_png(tmp_path, capsys):
    root = build_iu_kaggle(tmp_path / "iu")
    out = tmp_path / "m.jsonl"
    main(["data", "prepare", "--format", "iu-xray-kaggle", "--root", str(root), "--out", str(out)])
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--out-dir", str(tmp_path / "stats")]) == 0
    text = capsys.readouterr().out
    assert "studies: 5  images: 4  text-only studies: 2" in text
    assert "views (" in text and "FRONTAL" in text
    # Missing files: uid 2's lateral, uid 3's frontal, uid 5's lateral.
    assert "views of missing image files: LATERAL 2, FRONTAL 1" in text
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    # Findings word counts of the five kept studies: 8, 2, 0, 6, 2 (uid 3 has impression only)
    assert stats["report_words"]["findings"]["empty"] == 1 and stats["report_words"]["findings"]["max"] == 8
    assert stats["chexpert_positive"] == {"No Finding": 3, "Cardiomegaly": 1, "Lung Opacity": 1, "Pleural Effusion": 1}
    assert (tmp_path / "stats" / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "stats" / "stats.txt").read_text() == text.split("wrote ")[0]


def test_data_group_is_extensible(tmp_path, monkeypatch, capsys):
    import sys
    import types

    module = types.ModuleType("radgen_test_extra_cli")

    def register(data_subparsers):
        parser = data_subparsers.add_parser("hello")
        parser.set_defaults(func=lambda args: print("hello from extension") or 0)

    module.register = register
    monkeypatch.setitem(sys.modules, "radgen_test_extra_cli", module)
    monkeypatch.setattr(data_cli, "DATA_SUBCOMMAND_MODULES", ["radgen_test_extra_cli"])
    assert main(["data", "hello"]) == 0
    assert "hello from extension" in capsys.readouterr().out


def _table(tmp_path, subjects: bool):
    """200 text-only studies, all marked split=test by the dataset; 2 studies per subject."""
    rows = [{"study_id": f"s{i}", "split": "test", "findings": f"report {i} ."} | ({"subject_id": f"p{i // 2}"} if subjects else {})
            for i in range(200)]
    path = tmp_path / ("with-subjects.jsonl" if subjects else "studies.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _resplit(table, out, seed, capsys, ratio="0.8,0.1,0.1"):
    assert main(["data", "prepare", "--format", "manifest", "--root", str(table), "--out", str(out),
                 "--resplit", ratio, "--seed", str(seed)]) == 0
    return {s.study_id: (s.split, s.subject_id) for s in read_manifest(out)}, capsys.readouterr().err


def test_resplit_replaces_the_dataset_split_by_subject(tmp_path, capsys):
    table = _table(tmp_path, subjects=True)
    first, err = _resplit(table, tmp_path / "a.jsonl", 7, capsys)
    assert "200 studies: dataset's own split replaced by --resplit" in err and "(by subject)" in err
    # 100 subjects cut 80 / 10 / 10, both studies of a subject always together
    splits = Counter(split for split, _ in first.values())
    assert splits == {"train": 160, "val": 20, "test": 20}
    by_subject = {}
    for split, subject in first.values():
        by_subject.setdefault(subject, set()).add(split)
    assert all(len(s) == 1 for s in by_subject.values())
    again, _ = _resplit(table, tmp_path / "b.jsonl", 7, capsys)
    other, _ = _resplit(table, tmp_path / "c.jsonl", 8, capsys)
    assert again == first and other != first


def test_resplit_without_subjects_goes_by_study_on_any_adapter(tmp_path, capsys):
    first, err = _resplit(_table(tmp_path, subjects=False), tmp_path / "a.jsonl", 0, capsys, "0.5,0.25,0.25")
    assert Counter(split for split, _ in first.values()) == {"train": 100, "val": 50, "test": 50}
    assert "(by study: no subject ids)" in err
    # an adapter with an official split (MIMIC-CXR: train, validate and test): every study is re-split
    root = build_mimic(tmp_path / "mimic")
    assert main(["data", "prepare", "--format", "mimic-cxr", "--root", str(root), "--out", str(tmp_path / "m.jsonl"),
                 "--resplit", "0,0,1"]) == 0
    assert {s.split for s in read_manifest(tmp_path / "m.jsonl")} == {"test"}


def test_resplit_errors_name_the_flag(tmp_path, capsys):
    table = _table(tmp_path, subjects=False)
    assert main(["data", "prepare", "--format", "manifest", "--root", str(table), "--out", str(tmp_path / "x.jsonl"), "--resplit", "0.8,0.1"]) == 2
    assert "--resplit '0.8,0.1' must be three" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "manifest", "--root", str(table), "--out", str(tmp_path / "x.jsonl"),
                 "--resplit", "0.8,0.1,0.1", "--split-ratio", "0.8,0.1,0.1"]) == 2
    assert "drop --split-ratio" in capsys.readouterr().err
