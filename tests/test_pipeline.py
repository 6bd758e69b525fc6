"""radgen.load(...) pipeline and `radgen generate IMAGE_OR_DIR_OR_MANIFEST` with the default model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import radgen
from radgen.cli import main
from radgen.errors import DataError, WeightsError
from radgen.generate.inputs import CORRUPT, EMPTY, NO_PIXELS, NOT_AN_IMAGE, collect_inputs
from radgen.pipeline import DEFAULT_MODEL_DIR, resolve_model, to_image
from tests.oneline_fixtures import dicom_dataset, image_folder, radiograph_array, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return radgen.load(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("scans") / "scans")


def test_folder_inputs_recurse_and_count_unreadable_files_by_reason(folder):
    inputs = collect_inputs(folder)
    assert [s.study_id for s in inputs.studies] == ["a.png", "b.jpg", "sub/IM0001"]
    assert dict(inputs.skipped) == {NOT_AN_IMAGE: 1, EMPTY: 1, CORRUPT: 1, NO_PIXELS: 1}  # .DS_Store: hidden, ignored
    assert inputs.skipped_text().startswith("4 files skipped (")


def test_single_bad_file_and_missing_path_are_one_line_errors(folder, tmp_path):
    with pytest.raises(DataError, match=r"notes.txt: cannot read it as a radiograph \(not PNG/JPEG/DICOM\)"):
        collect_inputs(folder / "notes.txt")
    with pytest.raises(DataError, match="nope: not found; pass an image"):
        collect_inputs(tmp_path / "nope")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no readable PNG/JPEG/DICOM image"):
        collect_inputs(tmp_path / "empty_dir")


def test_model_names_resolve_to_the_shipped_model_and_recipes_without_weights_say_so():
    assert resolve_model(None) == DEFAULT_MODEL_DIR
    assert resolve_model("radgen-small") == DEFAULT_MODEL_DIR
    assert resolve_model("default") == DEFAULT_MODEL_DIR
    with pytest.raises(WeightsError, match="recipe without shipped weights; train it with `radgen train blip2-opt-lora`"):
        resolve_model("blip2-opt-lora")
    with pytest.raises(WeightsError, match="no such model folder or shipped model name; known names: radgen-small, default; a model folder"):
        resolve_model("no-such-model")


def test_every_input_kind_decodes_to_the_pixels_of_the_file_on_disk(folder):
    from radgen.data.images import load_image

    pixels = radiograph_array(seed=1)
    on_disk = np.asarray(load_image(folder / "a.png"))
    assert np.array_equal(np.asarray(to_image(Image.fromarray(pixels))), on_disk)
    assert np.array_equal(np.asarray(to_image(pixels)), on_disk)
    assert np.array_equal(np.asarray(to_image((folder / "a.png").read_bytes())), on_disk)
    rgb = np.repeat(pixels[..., None], 3, axis=2)
    assert np.array_equal(np.asarray(to_image(rgb)), on_disk)
    # 16-bit input is stretched min..max like a 16-bit PNG; a pydicom Dataset like its file
    wide = pixels.astype(np.uint16) * 16
    assert np.array_equal(np.asarray(to_image(wide)), np.asarray(to_image(Image.fromarray(wide))))
    assert np.array_equal(np.asarray(to_image(dicom_dataset())), np.asarray(load_image(folder / "sub" / "IM0001")))
    with pytest.raises(DataError, match="x: an array must be H×W"):
        to_image(np.zeros((2, 3, 4, 5), dtype=np.uint8), "x")
    with pytest.raises(DataError, match="cannot read a dict as an image"):
        to_image({"not": "an image"})


def test_pipeline_returns_rows_with_sentence_confidences_one_or_batched(pipe, folder, model_dir):
    from radgen.generate.decode import generate_reports

    single = pipe(str(folder / "a.png"))
    assert set(single) >= {"findings", "sentences", "confidence", "study_id", "token_logprobs"}
    assert single["study_id"] == str(folder / "a.png") and single["findings"]
    assert single["sentences"] and all(0.0 <= s["confidence"] <= 1.0 and s["text"] for s in single["sentences"])
    batch = pipe([folder / "a.png", radiograph_array(seed=2), folder / "sub" / "IM0001"], batch_size=2)
    assert len(batch) == 3 and batch[0]["findings"] == single["findings"] and batch[1]["study_id"] == "input 1"
    # the same rows as the manifest path of radgen.generate (what `radgen generate` writes)
    studies = collect_inputs(folder).studies
    rows = generate_reports(pipe.model, studies, root=folder, section="findings", progress=False)
    expected = {row["study_id"]: row for row in rows}
    assert batch[2]["token_logprobs"] == expected["sub/IM0001"]["token_logprobs"]
    assert single["token_logprobs"] == expected["a.png"]["token_logprobs"]
    assert expected["a.png"]["token_logprobs"] != expected["sub/IM0001"]["token_logprobs"]  # the image matters
    assert pipe(folder / "a.png", max_new_tokens=2)["token_logprobs"] == single["token_logprobs"][:2]


def test_generate_cli_on_a_folder_writes_rows_and_counts_skips(model_dir, folder, tmp_path, capsys, pipe):
    out = tmp_path / "preds.jsonl"
    assert main(["generate", str(folder), "--model", str(model_dir), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["study_id"] for r in rows] == ["a.png", "b.jpg", "sub/IM0001"]
    assert rows[0]["findings"] == pipe(folder / "a.png")["findings"]  # CLI and pipeline decode alike
    printed = capsys.readouterr().out
    assert "3 generated" in printed and "4 files skipped" in printed and "1 not PNG/JPEG/DICOM" in printed
    # one image, and the old --data spelling for a manifest, still work
    one = tmp_path / "one.jsonl"
    assert main(["generate", str(folder / "b.jpg"), "--model", str(model_dir), "--out", str(one), "--no-progress"]) == 0
    assert json.loads(one.read_text())["study_id"] == "b.jpg"


def test_generate_cli_errors_are_one_line(model_dir, folder, tmp_path, capsys):
    assert main(["generate", "--model", str(model_dir), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "no input: pass an image, a folder of images or a manifest" in capsys.readouterr().err
    assert main(["generate", str(folder), "--model", "blip2-opt-lora", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "radgen train blip2-opt-lora" in capsys.readouterr().err


def test_indication_and_lateral_reach_the_model(pipe, monkeypatch):
    """radgen-small reads the indication (prompt) and the lateral view (finding head): the pipeline
    passes them per input, and refuses lists that do not match the inputs."""
    seen = {}
    original = pipe.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(pipe.model, "generate", spy)
    front, side = radiograph_array(), radiograph_array()[::-1].copy()
    pipe([front, front], indication=["chest pain", None], lateral=[side, None], max_new_tokens=3)
    assert seen["contexts"] == ["chest pain", None]
    assert seen["lateral_mask"].tolist() == [True, False] and (seen["lateral_pixel_values"][1] == 0).all()
    seen.clear()
    row = pipe(front, indication="dyspnea", max_new_tokens=3)
    assert seen["contexts"] == ["dyspnea"] and "lateral_mask" not in seen and row["findings"] is not None
    with pytest.raises(DataError, match="indications: 1 given for 2 inputs"):
        pipe([front, front], indication=["x"], max_new_tokens=3)


def test_pipeline_batches_in_lanes_give_the_rows_of_one_lane_in_order(pipe, folder):
    """Three batches of one over two lanes of one thread (the last alone) against one lane on one thread."""
    import copy

    import torch

    from radgen.generate.lanes import per_thread_counts

    items = [folder / "a.png", radiograph_array(seed=3), folder / "sub" / "IM0001"]
    previous, table = torch.get_num_threads(), pipe.model.report_draft
    try:
        torch.set_num_threads(1)
        pipe.model.report_draft = copy.deepcopy(table)  # both calls draft from the same table: the same pass shapes
        one = pipe(items, batch_size=1, lanes=1)
        torch.set_num_threads(2)
        pipe.model.report_draft = copy.deepcopy(table)
        laned = pipe(items, batch_size=1, lanes=2)
    finally:
        torch.set_num_threads(previous)
        pipe.model.report_draft = table
    assert [r["study_id"] for r in laned] == [r["study_id"] for r in one] == [str(folder / "a.png"), "input 1", str(folder / "sub" / "IM0001")]
    for a, b in zip(one[:2] if per_thread_counts() else one, laned):  # the leftover third ran on two threads
        assert a["tokens"] == b["tokens"] and a["token_logprobs"] == b["token_logprobs"]
