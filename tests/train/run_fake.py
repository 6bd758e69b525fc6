"""Subprocess entry for the kill/resume test: trains the test double (tests/train/fakes.py).

    python -m tests.train.run_fake OUT_DIR [--resume]
"""

import sys

import torch

from radgen.train.trainer import Trainer, end_distributed
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe


def collate(items):
    return {
        "study_ids": [i["study_id"] for i in items],
        "image_keys": [i["image_key"] for i in items],
        "reports": [i["report"] for i in items],
        "pixel_values": torch.stack([i["pixel_values"] for i in items]),
    }


def _option(argv: list[str], name: str, default: int) -> int:
    return next((int(a.split("=", 1)[1]) for a in argv if a.startswith(f"--{name}=")), default)


def _no_dropout(recipe):
    model = TinyReportGenerator(recipe)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0  # attention dropout is a float, not a Dropout module
    return model


def main(argv: list[str]) -> None:
    """OUT [--resume] [--cache] [--no-dropout] [--batch=N] [--accum=N]"""
    out = argv[0]
    recipe = fake_recipe(**{"train.save_every": 2, "train.feature_cache": "--cache" in argv, "train.feature_cache_dtype": "float32",
                            "train.batch_size": _option(argv, "batch", 4), "train.grad_accum": _option(argv, "accum", 1)})
    factory = _no_dropout if "--no-dropout" in argv else TinyReportGenerator
    Trainer(recipe, out, resume="--resume" in argv, model_factory=factory,
            train_dataset=FakeStudies(20), val_dataset=FakeStudies(6, seed=1, prefix="v"), collate=collate, progress=False).train()
    end_distributed()  # as `radgen train` does


if __name__ == "__main__":
    main(sys.argv[1:])
