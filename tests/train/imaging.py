"""Generated image+report studies on disk (PNG + manifest.jsonl) for end-to-end training tests.

Until the IU-Phantom renderer is wired in, images are 64x64 grayscale noise with a bright
region whose place decides the report, so a model can learn image → text in a few steps.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from radgen.data.study import ImageRef, Study, write_manifest

FINDINGS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion.",
    "Small left pleural effusion. The heart is normal in size.",
    "Right lower lobe opacity. No pleural effusion. Heart size normal.",
]


def write_studies(root: Path, train: int = 24, val: int = 6, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    studies = []
    for index in range(train + val):
        kind = index % 3
        pixels = rng.integers(0, 60, (size, size)).astype(np.uint8)
        if kind == 1:
            pixels[:, : size // 2] += 150
        elif kind == 2:
            pixels[size // 2 :, size // 2 :] += 150
        name = f"images/s{index}.png"
        Image.fromarray(pixels, mode="L").save(root / name)
        studies.append(Study(study_id=f"s{index}", images=[ImageRef(name, "PA")], sections={"findings": FINDINGS[kind]},
                             split="train" if index < train else "val", source="test"))
    write_manifest(root / "manifest.jsonl", studies)
    return root / "manifest.jsonl"
