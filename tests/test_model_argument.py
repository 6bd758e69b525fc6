"""`--model` takes a shipped name, a model folder or a training run folder in every subcommand (issue #17).

Each subcommand is run through `radgen.cli.main` up to the model load; the loader is replaced by one
that records the folder it was handed and stops, so the real model is never built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import radgen.generate.decode as decode
from radgen.cli import main
from radgen.data.study import ImageRef, Study, write_manifest
from radgen.errors import RadgenError
from radgen.pipeline import DEFAULT_MODEL_DIR, MODEL_NAMES, resolve_model


class _Stopped(RadgenError):
    """Raised by the stand-in loader: the command got as far as loading, which is all these tests need."""


@pytest.fixture()
def loaded(monkeypatch) -> list[Path]:
    """The folders handed to radgen.generate.decode.load_model (every subcommand loads through it)."""
    seen: list[Path] = []

    def record(path, *args, **kwargs):
        seen.append(Path(path))
        raise _Stopped("stopped at the model load")

    monkeypatch.setattr(decode, "load_model", record)
    return seen


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    """An image, a manifest with one test study, a model folder and a training run folder."""
    Image.new("L", (64, 64), 128).save(tmp_path / "chest.png")
    write_manifest(tmp_path / "manifest.jsonl", [Study(study_id="s1", images=[ImageRef(path="chest.png", view="PA")],
                                                       sections={"findings": "No effusion."}, split="test")])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "radgen_config.yaml").write_text("# only its presence matters to the resolver\n")
    (tmp_path / "run" / "best").mkdir(parents=True)
    (tmp_path / "run" / "best" / "radgen_config.yaml").write_text("# a run's best/ model\n")
    return tmp_path


# argv for each subcommand that takes a model, given the model spelling and the workspace
COMMANDS = {
    "generate": lambda model, ws: ["generate", str(ws / "chest.png"), "--model", model, "--out", str(ws / "p.jsonl"),
                                   "--device", "cpu", "--no-progress"],
    "explain": lambda model, ws: ["explain", str(ws / "chest.png"), "--model", model, "--out", str(ws / "explain"),
                                  "--device", "cpu"],
    "serve": lambda model, ws: ["serve", "--model", model],
    "demo": lambda model, ws: ["demo", "--model", model, "--out", str(ws / "demo"), "--metrics", "bleu"],
    "baseline": lambda model, ws: ["baseline", "--kind", "classifier-template", "--model", model,
                                   "--ref", str(ws / "manifest.jsonl"), "--out", str(ws / "b.jsonl")],
    "model export": lambda model, ws: ["model", "export", model, "--out", str(ws / "exported")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("spelling", ["name", "folder", "run"])
def test_every_model_argument_takes_a_name_a_folder_or_a_run(command, spelling, workspace, loaded, capsys):
    model, expected = {
        "name": ("radgen-small", DEFAULT_MODEL_DIR),
        "folder": (str(workspace / "model"), workspace / "model"),
        "run": (str(workspace / "run"), workspace / "run" / "best"),
    }[spelling]
    assert main(COMMANDS[command](model, workspace)) == 2
    assert "stopped at the model load" in capsys.readouterr().err
    assert loaded == [expected]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_model_name_is_one_line_naming_the_known_names_and_the_folder_option(command, workspace, loaded, capsys):
    assert main(COMMANDS[command]("radgen-smal", workspace)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("radgen: error: radgen-smal: no such model folder or shipped model name")
    assert f"known names: {', '.join(MODEL_NAMES)}" in err[0] and "a model folder" in err[0] and "also works" in err[0]
    assert loaded == []  # refused before any load


def test_without_model_the_shipped_model_is_used(workspace, loaded, capsys):
    for command in ("serve", "demo"):
        argv = [arg for arg in COMMANDS[command]("x", workspace) if arg not in ("--model", "x")]
        assert main(argv) == 2
    assert loaded == [DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR]


def test_an_existing_folder_wins_over_a_name(tmp_path, monkeypatch):
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "radgen_config.yaml").write_text("\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("default") == Path("default")
    assert resolve_model("radgen-small") == DEFAULT_MODEL_DIR


@pytest.mark.parametrize("spelling", ["name", "folder", "run"])
def test_fit_findings_takes_the_three_spellings_and_never_writes_into_the_installation(spelling, workspace, monkeypatch, capsys):
    from radgen.models import ReportGenerator

    seen: list[Path] = []

    def record(path, *args, **kwargs):
        seen.append(Path(path))
        raise _Stopped("stopped at the model load")

    monkeypatch.setattr(ReportGenerator, "from_pretrained", classmethod(lambda cls, path, *a, **k: record(path)))
    model, expected = {"name": ("radgen-small", DEFAULT_MODEL_DIR), "folder": (str(workspace / "model"), workspace / "model"),
                       "run": (str(workspace / "run"), workspace / "run" / "best")}[spelling]
    argv = ["fit-findings", model, "--data", str(workspace / "manifest.jsonl")]
    if spelling == "name":  # in place would overwrite the shipped model: refused before loading
        assert main(argv) == 2
        assert "pass --out DIR" in capsys.readouterr().err and seen == []
        argv += ["--out", str(workspace / "fitted")]
    assert main(argv) == 2
    assert "stopped at the model load" in capsys.readouterr().err
    assert seen == [expected]
