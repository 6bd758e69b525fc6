"""How many threads torch should use: the cores actually free to this process, not all of them.

Why: on a shared machine (CI, a laptop running other jobs, two radgen processes) every torch op
spawns one OpenMP thread per core, and threads that find their core busy spin at barriers: measured
on the project's 2-core machine, 2 threads on a loaded machine were 3-10x slower than 1. So radgen
counts the cores its affinity mask allows, samples how busy they are for 50 ms (/proc/stat), and
uses the idle ones (at least 1). `RADGEN_NUM_THREADS` (or OMP_NUM_THREADS set by the user) wins.

A count picked that way is a guess from one moment. Long jobs (training, `fit-findings`, encoding a
feature cache) call `rebalance_threads()` between steps: at most every 30 s it re-counts the cores
free to this process over the time since the last count (idle cores plus the ones it used itself)
and sets that. Why: a fit started while another job was finishing ran its whole hour on 1 thread
of 2, at half speed (717 s an epoch against 387 s on both; docs/benchmarks.md, "Grounding").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ENV = "RADGEN_NUM_THREADS"
REBALANCE_SECONDS = 30.0
_previous: list[int] = []
_balancers: list["ThreadBalancer | None"] = []  # one per configure_threads: None where the count was asked for


def allowed_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return idle, sum(fields)


def idle_fraction(window: float = 0.05) -> float | None:
    """Share of the machine's CPU time that was idle over `window` seconds (None where unknown)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(window)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1])


def free_cores(cores: int | None = None, idle: float | None = None) -> int:
    """Cores this process may use that are idle now (at least 1). Machine-wide idle share times the
    machine's cores, capped by this process's affinity."""
    cores = allowed_cores() if cores is None else cores
    idle = idle_fraction() if idle is None else idle
    if idle is None:
        return cores
    machine = os.cpu_count() or cores
    return max(1, min(cores, round(idle * machine)))


def pick_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, where the number came from): `requested`, else $RADGEN_NUM_THREADS, else
    $OMP_NUM_THREADS, else the free cores; what `configure_threads` sets, without setting it."""
    for source, value in (("argument", requested), (ENV, os.environ.get(ENV)), ("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))):
        if value not in (None, ""):
            try:
                threads = int(value)
            except ValueError:
                from radgen.errors import ConfigError

                raise ConfigError(f"{source}={value!r} is not a whole number of threads") from None
            if threads < 1:
                from radgen.errors import ConfigError

                raise ConfigError(f"{source}={value!r}: the thread count must be at least 1")
            break
    else:
        threads, source = free_cores(), "free cores"
    return threads, source


class ThreadBalancer:
    """Re-counts the cores free to this process over each interval of at least `interval` seconds:
    the machine's idle share times its cores, plus the cores this process kept busy itself (its own
    CPU time over the wall time), capped by the affinity mask, at least 1. The clocks are arguments
    so tests can drive them."""

    def __init__(self, interval: float = REBALANCE_SECONDS, cores: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 machine_times: Callable[[], tuple[float, float] | None] | None = None,
                 own_time: Callable[[], float] = time.process_time):
        self.interval = interval
        self.cores = allowed_cores() if cores is None else cores
        self.clock, self.own_time = clock, own_time
        self.machine_times = machine_times or _cpu_times
        self.mark = self._snapshot()

    def _snapshot(self) -> tuple[float, tuple[float, float] | None, float]:
        return self.clock(), self.machine_times(), self.own_time()

    def free_cores(self) -> int | None:
        """The count over the time since the last one, once `interval` has passed; None before that
        (one clock read) or where /proc/stat cannot be read."""
        if self.clock() - self.mark[0] < self.interval:
            return None
        (start, machine_start, own_start), now = self.mark, self._snapshot()
        self.mark = now
        wall = now[0] - start
        if machine_start is None or now[1] is None or now[1][1] <= machine_start[1] or wall <= 0:
            return None
        idle_share = (now[1][0] - machine_start[0]) / (now[1][1] - machine_start[1])
        own_cores = (now[2] - own_start) / wall
        return max(1, min(self.cores, round(idle_share * (os.cpu_count() or self.cores) + own_cores)))


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to `pick_threads(requested)`; a count picked from the free cores
    is re-picked by `rebalance_threads()` as the load changes, one that was asked for never is."""
    import torch

    threads, source = pick_threads(requested)
    _previous.append(torch.get_num_threads())
    _balancers.append(ThreadBalancer() if source == "free cores" else None)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    log.debug("torch threads: %d (%s; %d cores allowed)", threads, source, allowed_cores())
    return threads


def rebalance_threads() -> int | None:
    """Between the steps of a long job: set torch's threads to the cores free to this process over
    the last interval, where `configure_threads` picked the count itself. Returns the new count when
    it changed; cheap (a clock read) between intervals, and a no-op without `configure_threads`."""
    balancer = _balancers[-1] if _balancers else None
    if balancer is None:
        return None
    threads = balancer.free_cores()
    if threads is None:
        return None
    import torch

    current = torch.get_num_threads()
    if threads == current:
        return None
    torch.set_num_threads(threads)
    log.info("torch threads: %d -> %d (the cores free to radgen over the last %.0f s)", current, threads, balancer.interval)
    return threads


def restore_threads() -> None:
    """Undo the last configure_threads (a no-op when there was none)."""
    if _balancers:
        _balancers.pop()
    if _previous:
        import torch

        torch.set_num_threads(_previous.pop())
