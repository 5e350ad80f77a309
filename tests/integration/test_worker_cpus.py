"""``worker_cpus``: serve pins the workers to their CPUs and keeps router and gateway off
them (what the benchmark's "workers on their own core" rows rely on)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, child_pids, free_port, start_serve, stop_serve
from workers.launcher import Child, Supervisor

ALLOWED = sorted(os.sched_getaffinity(0))


def _module(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[args.index(b"-m") + 1].decode() if b"-m" in args else ""


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to split")
def test_serve_pins_workers_and_keeps_the_rest_off_their_cpu(slide_root: Path) -> None:
    worker_cpu = ALLOWED[-1]
    proc, _ = start_serve(slide_root, "--worker-cpus", str(worker_cpu))
    try:
        by_module: dict[str, list[set[int]]] = {}
        for pid in child_pids(proc.pid):
            by_module.setdefault(_module(pid), []).append(os.sched_getaffinity(pid))
        # workers = 0 means one per CPU of worker_cpus: one worker here
        assert by_module["workers.cli"] == [{worker_cpu}]
        rest = set(ALLOWED) - {worker_cpu}
        assert by_module["router.cli"] == [rest]
        assert by_module["wsgateway.cli"] and all(c == rest for c in by_module["wsgateway.cli"])
    finally:
        stop_serve(proc)


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to split")
def test_worker_cpus_outside_our_cpuset_is_a_clear_start_error(slide_root: Path) -> None:
    """The settings only know the machine's CPU count; serve started under a smaller
    cpuset (here: only the first CPU) names the CPUs it cannot use and exits."""
    first, last = ALLOWED[0], ALLOWED[-1]
    proc = subprocess.run(
        [sys.executable, "-m", "workers.serve", "serve", "--slides", str(slide_root),
         "--port", str(free_port()), "--stats-port", "0", "--worker-cpus", str(last)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {first}))
    assert proc.returncode == 2
    assert f"CPUs [{last}] are not available" in proc.stderr + proc.stdout


def test_a_child_that_cannot_start_is_retried_not_fatal() -> None:
    """Spawning under a CPU set the kernel refuses fails for that child only: logged,
    retried with backoff, the supervisor itself carries on."""
    impossible = frozenset({4095})  # no machine here has CPU 4095
    child = Child("pinned", [sys.executable, "-c", "pass"], dict(os.environ), cpus=impossible)
    supervisor = Supervisor([child])
    supervisor.start()
    assert child.proc is None and child.restart_at > 0 and child.backoff > 0.25
    supervisor.poll()  # not due yet: still nothing, still no exception
    assert child.proc is None
