"""How many threads torch should use: the cores actually free to this process, not all of them.

Why: on a shared machine (CI, a laptop running other jobs, two radgen processes) every torch op
spawns one OpenMP thread per core, and threads that find their core busy spin at barriers: measured
on the project's 2-core machine, 2 threads on a loaded machine were 3-10x slower than 1. So radgen
counts the cores its affinity mask allows, samples how busy they are for 50 ms (/proc/stat), and
uses the idle ones (at least 1). `RADGEN_NUM_THREADS` (or OMP_NUM_THREADS set by the user) wins.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

ENV = "RADGEN_NUM_THREADS"
_previous: list[int] = []


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


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to `pick_threads(requested)`."""
    import torch

    threads, source = pick_threads(requested)
    _previous.append(torch.get_num_threads())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    log.debug("torch threads: %d (%s; %d cores allowed)", threads, source, allowed_cores())
    return threads


def restore_threads() -> None:
    """Undo the last configure_threads (a no-op when there was none)."""
    if _previous:
        import torch

        torch.set_num_threads(_previous.pop())
