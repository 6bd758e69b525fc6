"""benchmarks/folder_input.py: a folder of PA and lateral files, read as `radgen generate FOLDER` reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.test_finding_members import _studies
from tests.generate.fixtures import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_a_paired_folder_decodes_as_the_manifest_and_one_file_a_study_does_not_pair(tmp_path):
    manifest = _studies(tmp_path, 12)  # 6 test studies, each a PA and a lateral file (tests/train/imaging.py)
    tiny_model("radgen-small").save_pretrained(str(tmp_path / "model"))
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "folder_input.py"), "--model", str(tmp_path / "model"), "--data",
                    str(manifest), "--bootstrap", "20", "--json", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RADGEN_NO_CPU_FAST_PATHS": "1"}, timeout=600)
    result = json.loads(out.read_text())
    assert result["folder_studies"] == {"folder": {"studies": 6, "paired": 6},
                                        "folder, one study per image": {"studies": 12, "paired": 0}}
    systems = result["systems"]
    assert [row["studies_scored"] for row in systems.values()] == [6, 6, 6]
    # paired, the head reads what the manifest gives it; one file a study, it reads the frontal alone
    probs = {name: row["finding_probs"] for name, row in systems.items()}
    assert sorted(probs["folder"]) == sorted(probs["manifest"]) == sorted(probs["folder, one study per image"])
    for study, manifest_probs in probs["manifest"].items():
        assert probs["folder"][study] == pytest.approx(manifest_probs, abs=1e-5)
    assert any(probs["folder, one study per image"][s] != pytest.approx(p, abs=1e-3) for s, p in probs["manifest"].items())
