"""Test harness: real router, worker and gateway processes on ipc paths and free ports.

System, WSClient, wait_for and the /proc helpers live in scripts/benchlib (soak.py uses
them too) and are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from readers.demo_slide import write_demo_slide
from scripts.benchlib.procs import child_pids, pid_alive
from scripts.benchlib.system import System, WSClient, wait_for
from workers.serve import free_port  # noqa: F401 - re-exported for the tests

__all__ = ["REPO", "System", "WSClient", "child_pids", "free_port", "make_slides",
           "pid_alive", "start_serve", "stop_serve", "wait_for"]

REPO = Path(__file__).resolve().parent.parent


def start_serve(slide_root: Path, *flags: str, **popen: Any
                ) -> tuple[subprocess.Popen[bytes], int]:
    """``tilerouter serve`` of ``slide_root`` on a free port; returns (process, port) once
    /healthz answers and a websocket tile request works (killed if it never does)."""
    port = free_port()
    options: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
                               **popen}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.serve", "serve", "--slides", str(slide_root),
         "--port", str(port), "--stats-port", "0", *flags], cwd=REPO, **options)
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                timeout=2).status == 200, 30,
                 what="serve ready")
        ws = WSClient(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
        try:
            assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"]
        finally:
            ws.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT ``serve`` (killed after 20 s) and wait for its children to be gone."""
    children = child_pids(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    wait_for(lambda: not any(pid_alive(p) for p in children), 10, what="children gone")


def make_slides(root: Path) -> dict[str, Path]:
    """A small slide tree with every kind of bad file the tests need."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    a = Path(write_demo_slide(root / "a.tiff", 3000, 2200, seed=1))
    b = Path(write_demo_slide(root / "sub" / "b.tiff", 2000, 1500, seed=2))
    c = Path(write_demo_slide(root / "c.tiff", 1200, 900, seed=3))
    (root / "notaslide.tiff").write_text("this is not a TIFF file\n")
    (root / "truncated.tiff").write_bytes(a.read_bytes()[:4000])
    outside = root.parent / "outside-secret.tiff"
    shutil.copy(c, outside)
    os.symlink(outside, root / "escape.tiff")
    return {"a": a, "b": b, "c": c}


@contextlib.contextmanager
def running(sysm: System, start: bool = True) -> Iterator[System]:
    """``sysm`` started (unless the caller starts its parts itself), its logs' tail shown if
    anything fails, always stopped: the body of every system fixture."""
    try:
        if start:
            sysm.start()
        yield sysm
    except Exception:
        print(sysm.logs()[-5000:])
        raise
    finally:
        sysm.stop()
