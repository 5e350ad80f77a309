"""CPU accounting from /proc (Linux): the server's process group and the whole machine.

On a small shared machine the numbers only mean something next to who used the CPU:
the server under test, the load generator, or something else entirely.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from .procs import CLK_TCK, all_procs


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.perf_counter()
    machine_busy: float  # CPU seconds used by anything since boot
    group: Counter[str]  # CPU seconds of the server group's live processes, by component
    own: float  # this process's CPU seconds


@dataclass(frozen=True)
class CpuUsage:
    """Average cores busy between two samples."""

    server: dict[str, float]  # by component: gateway, router, workers, serve
    bench: float
    other: float

    @property
    def server_total(self) -> float:
        return sum(self.server.values())


def machine_busy_seconds() -> float:
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / CLK_TCK


COMPONENTS = {"wsgateway.cli": "gateway", "router.cli": "router", "workers.cli": "workers",
              "workers.serve": "serve"}


def component(pid: str) -> str:
    """Which part of the system a process is, from its ``python -m <module>`` command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().decode(errors="replace").split("\0")
    except OSError:
        return "other"
    return next((COMPONENTS[a] for a in args if a in COMPONENTS), "other")


def group_cpu_seconds(pgid: int) -> Counter[str]:
    """utime + stime of every live process in process group ``pgid``, by component."""
    total: Counter[str] = Counter()
    for p in all_procs().values():
        if p.pgrp == pgid:
            total[component(str(p.pid))] += p.cpu_s
    return total


def sample(pgid: int) -> CpuSample | None:
    try:
        return CpuSample(time.perf_counter(), machine_busy_seconds(), group_cpu_seconds(pgid),
                         time.process_time())
    except (OSError, ValueError, IndexError):  # no /proc: not Linux
        return None


def usage(before: CpuSample | None, after: CpuSample | None) -> CpuUsage | None:
    if before is None or after is None or after.at <= before.at:
        return None
    span = after.at - before.at
    server = {name: (after.group[name] - before.group[name]) / span for name in after.group}
    bench = (after.own - before.own) / span
    machine = (after.machine_busy - before.machine_busy) / span
    return CpuUsage(server, bench, max(0.0, machine - sum(server.values()) - bench))
