"""Automatic torch thread count from the cores free to the process."""

import pytest
import torch

from radgen.cli import main
from radgen.errors import ConfigError
from radgen.threads import ENV, configure_threads, free_cores, idle_fraction, restore_threads


def test_free_cores_follow_the_idle_share_capped_by_affinity(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert free_cores(cores=8, idle=1.0) == 8
    assert free_cores(cores=8, idle=0.5) == 4
    assert free_cores(cores=8, idle=0.0) == 1  # a fully loaded machine still gets one thread
    assert free_cores(cores=2, idle=1.0) == 2  # affinity caps an idle big machine
    fraction = idle_fraction(0.01)
    assert fraction is None or 0.0 <= fraction <= 1.0


def test_explicit_counts_win_and_bad_ones_are_clear_errors(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(ENV, "1")
    try:
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        assert configure_threads(2) == 2
    finally:
        restore_threads()
        restore_threads()
    assert torch.get_num_threads() == before
    monkeypatch.setenv(ENV, "many")
    with pytest.raises(ConfigError, match="RADGEN_NUM_THREADS='many'"):
        configure_threads()
    monkeypatch.setenv(ENV, "0")
    with pytest.raises(ConfigError, match="at least 1"):
        configure_threads()


def test_the_cli_sets_threads_for_the_command_and_restores_them(monkeypatch, capsys):
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr("radgen.models.cli._list", lambda args: seen.append(torch.get_num_threads()) or 0)
    assert main(["--threads", "1", "model", "list"]) == 0
    assert seen == [1] and torch.get_num_threads() == before
