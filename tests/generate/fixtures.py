"""Shared fixtures for generate/explain tests: a tiny saved model and a small IU-Phantom manifest."""

from __future__ import annotations

from pathlib import Path

import torch

from radgen.config import load_recipe
from radgen.data.phantom import render_study
from radgen.data.study import Study, write_manifest
from radgen.models import build_model

PHANTOM_STUDIES = [
    ("s1", "train", "The heart is normal. The lungs are clear.", ["normal"]),
    ("s2", "val", "Mild cardiomegaly. Small right pleural effusion.", ["Cardiomegaly/mild", "Pleural Effusion/right/small"]),
    ("s3", "test", "Left lower lobe atelectasis. No pneumothorax.", ["Pulmonary Atelectasis/lower lobe/left"]),
    ("s4", "test", "Right upper lobe nodule. Heart size normal.", ["Nodule/lung/upper lobe/right"]),
    ("s5", "test", "Large left pleural effusion.", ["Pleural Effusion/left/large"]),
]


def tiny_model(name: str = "radgen-small", *overrides: str):
    torch.manual_seed(0)
    model = build_model(load_recipe(name, size="tiny", overrides=list(overrides)))
    return model.eval()


def phantom_manifest(folder: Path, size: int = 64) -> Path:
    """Render the PHANTOM_STUDIES as IU-Phantom PA/lateral PNGs; returns the manifest path."""
    studies = []
    for study_id, split, findings, mesh in PHANTOM_STUDIES:
        base = Study(study_id=study_id, subject_id=study_id, split=split, sections={"findings": findings, "impression": ""},
                     labels={"mesh": mesh}, source="test")
        studies.append(render_study(base, folder, size=size))
    path = folder / "manifest.jsonl"
    write_manifest(path, studies)
    return path
