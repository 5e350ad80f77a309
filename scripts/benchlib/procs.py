"""Child processes of a benchmark, and what /proc says about processes (Linux).

Every server a benchmark starts leads a session (process group) of its own, so a Ctrl-C in
the terminal reaches only the benchmark, which then stops the server; the server also gets
a signal if the benchmark dies outright (PR_SET_PDEATHSIG), so none outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.serve import free_port  # noqa: F401 - the one free-port helper, re-exported

log = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


def die_with_parent(sig: int = signal.SIGINT) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the process that started it dies."""
    return lambda: _prctl(_PR_SET_PDEATHSIG, sig)


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process (to be seen and reaped here)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def spawn(argv: Sequence[str], log_path: str, env: dict[str, str] | None = None,
          cwd: str | None = None, parent_death_signal: int = signal.SIGINT
          ) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, output appended to ``log_path``, no stdin."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent(parent_death_signal))


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT,
               timeout: float = 20.0, what: str = "process") -> None:
    """``sig`` to the group leader and up to ``timeout`` s for it to exit, then SIGKILL
    whatever is still alive in its process group and reap the leader. A Ctrl-C while
    waiting skips straight to the kill."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s pid %d still running %.0fs after %s; killing its group", what,
                    proc.pid, timeout, signal.Signals(sig).name)
    except KeyboardInterrupt:
        log.warning("interrupted while stopping; killing %s group %d", what, proc.pid)
    finally:
        _kill_group(proc, what)


def _kill_group(proc: subprocess.Popen[bytes], what: str) -> None:
    left = [p.pid for p in all_procs().values()
            if p.pgrp == proc.pid and p.pid != proc.pid and p.state not in ("Z", "X")]
    if proc.poll() is None or left:
        if proc.poll() is not None:
            log.warning("%s exited but left processes %s in its group; killing them", what,
                        left)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# --- /proc ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgrp: int
    start: int  # starttime in ticks since boot: (pid, start) names one process
    cpu_s: float  # utime + stime
    state: str
    name: str


def proc_info(pid: int | str) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:  # gone, or no /proc
        return None
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    f = stat[stat.rindex(")") + 2:].split()  # the fields after "pid (comm)"
    return ProcInfo(int(pid), int(f[1]), int(f[2]), int(f[19]),
                    (int(f[11]) + int(f[12])) / CLK_TCK, f[0], name)


def all_procs() -> dict[int, ProcInfo]:
    out = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (info := proc_info(entry)) is not None:
                out[info.pid] = info
    return out


def process_tree(roots: Iterable[int]) -> dict[int, ProcInfo]:
    """``roots`` and all their live descendants."""
    procs = all_procs()
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    todo, tree = list(roots), {}
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in tree:
            tree[pid] = procs[pid]
            todo += children.get(pid, [])
    return tree


def child_pids(pid: int) -> set[int]:
    """Direct children of ``pid``."""
    return {p.pid for p in all_procs().values() if p.ppid == pid}


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    info = proc_info(pid)
    return info is not None and info.state != "Z"


def same_alive(p: ProcInfo) -> bool:
    """``p`` is still running (not a zombie, and its pid not reused by another process)."""
    now = proc_info(p.pid)
    return now is not None and now.start == p.start and now.state not in ("Z", "X")


def cmdline(pid: int | str) -> str:
    """The command line, arguments joined by spaces ("" when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def run_jobs(func: Callable[[Any], Any], jobs: Sequence[Any], procs: int) -> None:
    """``func`` over ``jobs``, ``procs`` at a time in spawned processes (in this one when
    there is one job or one process): slide generation is CPU-bound Python."""
    if len(jobs) > 1 and procs > 1:
        with mp.get_context("spawn").Pool(min(procs, len(jobs))) as pool:
            for _ in pool.imap_unordered(func, jobs):
                pass
    else:
        for job in jobs:
            func(job)
