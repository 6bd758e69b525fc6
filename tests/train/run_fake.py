"""Subprocess entry for the kill/resume test: trains the test double (tests/train/fakes.py).

    python -m tests.train.run_fake OUT_DIR [--resume]
"""

import sys

import torch

from radgen.train.trainer import Trainer
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe


def collate(items):
    return {
        "study_ids": [i["study_id"] for i in items],
        "image_keys": [i["image_key"] for i in items],
        "reports": [i["report"] for i in items],
        "pixel_values": torch.stack([i["pixel_values"] for i in items]),
    }


def main(argv: list[str]) -> None:
    out = argv[0]
    recipe = fake_recipe(**{"train.save_every": 2, "train.feature_cache": "--cache" in argv, "train.feature_cache_dtype": "float32"})
    Trainer(recipe, out, resume="--resume" in argv, model_factory=TinyReportGenerator,
            train_dataset=FakeStudies(20), val_dataset=FakeStudies(6, seed=1, prefix="v"), collate=collate, progress=False).train()


if __name__ == "__main__":
    main(sys.argv[1:])
