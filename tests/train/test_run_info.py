"""RUN/run_info.json: versions, device and git commit, written at every start of a run's log."""

import json
import subprocess
from pathlib import Path

from radgen.train.run_log import RUN_INFO_FILE, MetricsLog, run_info


def test_metrics_log_writes_run_info_with_versions_device_and_commit(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False, device="cpu")
    log.close()
    info = json.loads((tmp_path / RUN_INFO_FILE).read_text())
    assert info["device"] == "cpu" and info["resumed_from_step"] is None
    for package in ("torch", "transformers", "peft"):
        assert info["packages"][package], package
    source = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the record names the commit the code came from
        assert info["git"]["commit"] == head.stdout.strip()
    MetricsLog(tmp_path, tensorboard=False, resume_step=5).close()
    assert json.loads((tmp_path / RUN_INFO_FILE).read_text())["resumed_from_step"] == 5


def test_disabled_log_writes_nothing_and_default_device_is_named(tmp_path):
    MetricsLog(tmp_path / "rank1", enabled=False).close()
    assert not (tmp_path / "rank1").exists()
    assert run_info()["device"].startswith(("cpu", "cuda"))
