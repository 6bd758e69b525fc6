"""benchmarks/grounding.py --split-images: the scored studies' images from another manifest of the same studies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from radgen.data.study import read_manifest, write_manifest
from tests.benchmarks.test_finding_members import _studies
from tests.generate.fixtures import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, manifest: Path, *extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out.json"
    out.unlink(missing_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grounding.py"), "--model", str(tmp_path / "model"), "--data",
                           str(manifest), "--decodings", "greedy", "--bootstrap", "20", "--json", str(out), *extra],
                          # a fixed hash seed: CIDEr-D's sums run over sets, whose order (and last bit) changes between processes
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NO_CPU_FAST_PATHS": "1", "PYTHONHASHSEED": "0"},
                          capture_output=True, text=True, timeout=600)


def test_the_scored_studies_read_their_images_from_the_other_manifest(tmp_path):
    manifest = _studies(tmp_path, 12)
    tiny_model("radgen-small").save_pretrained(str(tmp_path / "model"))
    assert _run(tmp_path, manifest).returncode == 0
    before = json.loads((tmp_path / "out.json").read_text())

    # the test studies' images move to a folder of their own, with its own manifest (relative paths)
    again = tmp_path / "again"
    (again / "images").mkdir(parents=True)
    test = [s for s in read_manifest(manifest) if s.split == "test"]
    assert len(test) == 6
    for study in test:
        for image in study.images:
            moved = Path("images") / f"moved_{Path(image.path).name}"
            (manifest.parent / image.path).rename(again / moved)
            image.path = str(moved)
    write_manifest(again / "manifest.jsonl", test)

    run = _run(tmp_path, manifest, "--split-images", str(again / "manifest.jsonl"))
    assert run.returncode == 0, run.stderr[-2000:]
    after = json.loads((tmp_path / "out.json").read_text())
    assert after["split_images"] == str(again / "manifest.jsonl")
    # the same pixels, so the same reports and scores; labels and baselines still from --data
    assert after["systems"] == before["systems"]

    # a scored study the other manifest lacks: one line naming the manifest and the study
    write_manifest(again / "manifest.jsonl", test[1:])
    run = _run(tmp_path, manifest, "--split-images", str(again / "manifest.jsonl"))
    assert run.returncode != 0
    assert f"--split-images {again / 'manifest.jsonl'}: 1 of the 6 studies have no images there (first: {test[0].study_id})" in run.stderr
