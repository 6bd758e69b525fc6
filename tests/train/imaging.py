"""IU-Phantom studies on disk (PNG + manifest.jsonl) for end-to-end training tests.

Each study gets MeSH terms, an IU-style findings text that states them, and PA + lateral images
rendered by radgen.data.phantom (64 px, so a test renders 30 studies in a few seconds).
"""

from pathlib import Path

from radgen.data.phantom.render import render_study
from radgen.data.study import Study, write_manifest

CASES = [
    ("normal", "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax."),
    ("Cardiomegaly/mild", "The heart is mildly enlarged. The lungs are clear. No pleural effusion."),
    ("Pleural Effusion/left", "Small left pleural effusion. The heart is normal in size. No pneumothorax."),
]


def write_studies(root: Path, train: int = 24, val: int = 6, size: int = 64) -> Path:
    studies = []
    for index in range(train + val):
        mesh, findings = CASES[index % len(CASES)]
        sections = {"findings": findings}
        if index % 2 == 0:  # half the studies have an indication (radgen-small puts it in the prompt)
            sections["indication"] = ["Chest pain.", "XXXX-year-old with dyspnea", "pre-op"][index // 2 % 3]
        source = Study(study_id=f"s{index}", labels={"mesh": [mesh]}, sections=sections,
                       split="train" if index < train else "val", source="test")
        studies.append(render_study(source, root, seed=0, size=size))
    write_manifest(root / "manifest.jsonl", studies)
    return root / "manifest.jsonl"
