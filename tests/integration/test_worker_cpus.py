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
