"""Automatic torch thread count from the cores free to the process."""

import pytest
import torch

from radgen.cli import main
from radgen.errors import ConfigError
from radgen import threads
from radgen.threads import ENV, ThreadBalancer, configure_threads, free_cores, idle_fraction, rebalance_threads, restore_threads


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


class _Clocks:
    """Wall clock, /proc/stat-like (idle, total) machine times and this process's CPU time, set by hand."""

    def __init__(self):
        self.wall, self.idle, self.total, self.own, self.machine_reads = 0.0, 0.0, 0.0, 0.0, 0

    def machine(self):
        self.machine_reads += 1
        return self.idle, self.total

    def advance(self, seconds: float, idle_cores: float, own_cores: float, machine_cores: int = 2):
        self.wall += seconds
        self.idle += idle_cores * seconds
        self.total += machine_cores * seconds
        self.own += own_cores * seconds

    def balancer(self, cores: int = 2) -> ThreadBalancer:
        return ThreadBalancer(30.0, cores, clock=lambda: self.wall, machine_times=self.machine, own_time=lambda: self.own)


def test_the_balancer_counts_idle_cores_plus_the_ones_this_process_used(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    clocks = _Clocks()
    balancer = clocks.balancer()
    reads = clocks.machine_reads
    clocks.advance(10, idle_cores=1, own_cores=1)
    assert balancer.free_cores() is None and clocks.machine_reads == reads  # within the interval: not even read
    clocks.advance(20, idle_cores=1, own_cores=1)  # 1 thread, the other core idle: both are ours
    assert balancer.free_cores() == 2
    clocks.advance(30, idle_cores=0, own_cores=1)  # another job took the second core
    assert balancer.free_cores() == 1
    clocks.advance(30, idle_cores=0, own_cores=2)  # we kept both busy: both stay ours
    assert balancer.free_cores() == 2
    clocks.advance(30, idle_cores=0, own_cores=0.2)  # a loaded machine still leaves one thread
    assert balancer.free_cores() == 1
    assert clocks.balancer(cores=1).free_cores() is None  # a new balancer: no interval yet
    one = clocks.balancer(cores=1)
    clocks.advance(30, idle_cores=2, own_cores=0)
    assert one.free_cores() == 1  # affinity caps it
    blind = ThreadBalancer(30.0, 2, clock=lambda: clocks.wall, machine_times=lambda: None, own_time=lambda: clocks.own)
    clocks.advance(30, idle_cores=2, own_cores=0)
    assert blind.free_cores() is None  # no /proc/stat: leave the count alone


def test_rebalancing_moves_an_automatic_count_and_never_an_asked_one(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    before = torch.get_num_threads()
    clocks = _Clocks()
    try:
        monkeypatch.setattr(threads, "free_cores", lambda: 1)  # started while another job ran
        assert configure_threads() == 1
        threads._balancers[-1] = clocks.balancer()
        clocks.advance(30, idle_cores=1, own_cores=1)  # that job finished
        assert rebalance_threads() == 2 and torch.get_num_threads() == 2
        clocks.advance(30, idle_cores=1, own_cores=1)
        assert rebalance_threads() is None and torch.get_num_threads() == 2  # no change: nothing set
        monkeypatch.setenv(ENV, "1")
        assert configure_threads() == 1  # asked for: the balancer is not consulted
        assert threads._balancers[-1] is None
        clocks.advance(30, idle_cores=2, own_cores=0)
        assert rebalance_threads() is None and torch.get_num_threads() == 1
    finally:
        restore_threads()
        restore_threads()
    assert torch.get_num_threads() == before
