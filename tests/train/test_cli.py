"""Argument parsing of `radgen train` / `radgen sweep`: overrides and flags in any order."""

from radgen.cli import build_parser


def test_train_overrides_may_follow_flags():
    args = build_parser().parse_args(["train", "radgen-small", "--size", "tiny", "train.optim.lr=1e-4", "--resume", "model.peft.r=8"])
    assert args.config == "radgen-small" and args.size == "tiny" and args.resume
    assert args.overrides == ["train.optim.lr=1e-4", "model.peft.r=8"]


def test_sweep_grid_and_overrides():
    args = build_parser().parse_args(["sweep", "blip2-opt-lora", "train.batch_size=4", "--grid", "model.peft.r=4,8", "model.peft.alpha=16,32",
                                      "--steps", "50", "--gpus", "0,1"])
    assert args.config == "blip2-opt-lora" and args.overrides == ["train.batch_size=4"]
    assert args.grid == ["model.peft.r=4,8", "model.peft.alpha=16,32"] and args.steps == 50 and args.gpus == "0,1"
