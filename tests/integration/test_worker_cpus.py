"""``worker_cpus``: serve pins the workers to their CPUs and keeps router and gateway off
them (what the benchmark's "workers on their own core" rows rely on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, WSClient, child_pids, free_port, pid_alive, wait_for
from workers.launcher import Child, Supervisor

ALLOWED = sorted(os.sched_getaffinity(0))


def _module(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[args.index(b"-m") + 1].decode() if b"-m" in args else ""


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to split")
def test_serve_pins_workers_and_keeps_the_rest_off_their_cpu(slide_root: Path) -> None:
    worker_cpu = ALLOWED[-1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsgateway.serve", "serve", "--slides", str(slide_root),
         "--port", str(port), "--stats-port", "0", "--worker-cpus", str(worker_cpu)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                timeout=2).status == 200, 30,
                 what="serve ready")
        ws = WSClient(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
        try:
            assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"]
        finally:
            ws.close()
        by_module: dict[str, list[set[int]]] = {}
        for pid in child_pids(proc.pid):
            by_module.setdefault(_module(pid), []).append(os.sched_getaffinity(pid))
        # workers = 0 means one per CPU of worker_cpus: one worker here
        assert by_module["workers.cli"] == [{worker_cpu}]
        rest = set(ALLOWED) - {worker_cpu}
        assert by_module["router.cli"] == [rest]
        assert by_module["wsgateway.cli"] and all(c == rest for c in by_module["wsgateway.cli"])
    finally:
        children = child_pids(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wait_for(lambda: not any(pid_alive(p) for p in children), 10, what="children gone")


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to split")
def test_worker_cpus_outside_our_cpuset_is_a_clear_start_error(slide_root: Path) -> None:
    """The settings only know the machine's CPU count; serve started under a smaller
    cpuset (here: only the first CPU) names the CPUs it cannot use and exits."""
    first, last = ALLOWED[0], ALLOWED[-1]
    proc = subprocess.run(
        [sys.executable, "-m", "wsgateway.serve", "serve", "--slides", str(slide_root),
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
