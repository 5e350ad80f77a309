"""Three routers, slides sharded over them, two gateways sharing the port: kill -9 each
router in turn, SIGSTOP one, under websocket load: every request gets exactly one reply,
and it is a good one. (The network cut is tests/faults/test_router_netns_cut.py.)"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from scripts.benchlib.procs import child_pids, pid_alive
from scripts.benchlib.system import wait_for
from tests.faults.ws_load import Load
from tests.helpers import make_slides, start_serve, stop_serve

TILES = [(slide, level, col, row) for slide, top in (("a.tiff", 12), ("sub/b.tiff", 11),
                                                     ("c.tiff", 11))
         for level in (top - 1, top) for col in range(2) for row in range(2)]


def _routers(serve_pid: int) -> dict[str, int]:
    """Router pid by its frontend endpoint."""
    found = {}
    for pid in child_pids(serve_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"router.cli" in cmd:
            front = [e for e in env if e.startswith(b"TILEROUTER_FRONTEND=")]
            found[front[0].split(b"=", 1)[1].decode()] = pid
    return found


@pytest.mark.timeout(180)
def test_any_router_dies_under_load_and_no_request_fails(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    make_slides(root)
    proc, port = start_serve(root, "--routers", "3", "--workers", "2", "--gateways", "2",
                             "--heartbeat-interval", "0.3", "--heartbeat-liveness", "5",
                             "--gateway-cache-bytes", "0", "--prefetch", "false",
                             "--tile-cache-bytes", "0")
    try:
        wait_for(lambda: len(_routers(proc.pid)) == 3, 20, what="three routers")
        with Load([port], TILES, clients=3) as load:
            wait_for(lambda: load.answered > 50, 30, what="load running")
            for front in sorted(_routers(proc.pid)):
                victim = _routers(proc.pid)[front]
                os.kill(victim, signal.SIGKILL)
                served = load.answered
                wait_for(lambda f=front, v=victim: _routers(proc.pid).get(f, v) != v, 20,
                         what="router restarted")
                wait_for(lambda s=served: load.answered > s + 30, 30,
                         what="service continues")
            stopped = next(iter(_routers(proc.pid).values()))
            os.kill(stopped, signal.SIGSTOP)
            served = load.answered
            try:
                wait_for(lambda: load.answered > served + 50, 30,
                         what="service continues around a stopped router")
            finally:
                os.kill(stopped, signal.SIGCONT)
        load.assert_exactly_one_good_reply_each()
        assert load.answered > 200
        def stats() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
                return json.loads(resp.read())

        def resent() -> float:  # summed over both gateways (they share /metrics)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                lines = r.read().decode().splitlines()
            return sum(float(line.split()[-1]) for line in lines
                       if line.startswith("tilerouter_gateway_router_resent_total"))

        wait_for(lambda: len(stats()["routers"]) == 3, 20, what="all routers back in /stats")
        stats = stats()
        assert len(stats["gateway"]["routers"]) == 3
        assert sum(r["routing"]["requests"] for r in stats["routers"]) > 0
        # the killed routers' pending requests
        wait_for(lambda: resent() > 0, 10, what="re-sent requests counted")
        gateways = [p for p in child_pids(proc.pid)
                    if b"wsgateway.cli" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(gateways) == 2
    finally:
        stop_serve(proc)
    assert not pid_alive(proc.pid)
