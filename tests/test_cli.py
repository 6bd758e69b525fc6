"""radgen CLI plumbing: overrides anywhere on the line, missing extras named with their install line."""

import pytest

from radgen import cli
from radgen.cli import build_parser, main


def test_model_info_takes_overrides_after_options(capsys):
    assert main(["model", "info", "clipcap-prefix", "--size", "tiny", "model.peft.method=lora", "--json", "model.peft.r=8"]) == 0
    after = capsys.readouterr().out
    assert main(["model", "info", "clipcap-prefix", "model.peft.method=lora", "model.peft.r=8", "--size", "tiny", "--json"]) == 0
    assert capsys.readouterr().out == after
    assert main(["model", "info", "clipcap-prefix", "--size", "tiny", "model.peft.method=lora", "model.peft.r=4", "--json"]) == 0
    assert capsys.readouterr().out != after  # the override reached the recipe


@pytest.mark.parametrize("command", [["train", "radgen-small", "--size", "tiny", "train.seed=3", "--max-steps", "2", "model.peft.r=4"],
                                     ["sweep", "radgen-small", "--size", "tiny", "model.peft.r=4", "--steps", "2", "train.seed=3",
                                      "--grid", "model.peft.alpha=8,16"]])
def test_train_and_sweep_take_overrides_anywhere(command):
    args = build_parser().parse_args(command)
    assert args.overrides == ["train.seed=3", "model.peft.r=4"] or args.overrides == ["model.peft.r=4", "train.seed=3"]
    assert args.size == "tiny"


def test_a_missing_extra_is_named_with_its_install_line(monkeypatch, capsys):
    def needs_fastapi(args):
        raise ModuleNotFoundError("No module named 'fastapi'", name="fastapi")

    parser = build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=needs_fastapi, command="serve")
    assert main([]) == 2
    assert "fastapi is not installed; it comes with the [serve] extra: pip install 'radgen[serve]'" in capsys.readouterr().err


def test_core_install_without_serve_and_train_extras(tmp_path):
    """CLI, demo imports and training logs work without fastapi/uvicorn/tensorboard; serve names its extra."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "for name in ('fastapi', 'uvicorn', 'tensorboard', 'multipart', 'python_multipart'):\n"
        "    sys.modules[name] = None  # what an install without the extras looks like to import\n"
        "from radgen.cli import main\n"
        "import radgen.demo, radgen.serve.inference\n"
        "from radgen.train.run_log import MetricsLog\n"
        f"MetricsLog({str(tmp_path)!r}).close()\n"
        "assert main(['model', 'info', 'radgen-small', '--size', 'tiny', '--json']) == 0\n"
        "sys.exit(main(['serve']))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo,
                         env={**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2, run.stderr
    assert "uvicorn is not installed; it comes with the [serve] extra" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "run_info.json"]
