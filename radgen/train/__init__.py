"""Training: `radgen train CONFIG`, stages, checkpoints/resume, frozen-encoder feature cache, sweeps.

    from radgen.config import load_recipe
    from radgen.train import train
    result = train(load_recipe("radgen-small", size="tiny"), "runs/tiny")

See docs/training.md for the run-folder layout and every setting.
"""

from radgen.train.trainer import Trainer, TrainResult, train

__all__ = ["Trainer", "TrainResult", "train"]
