"""Faults caused for real: kill -9 and SIGSTOP workers, kill and restart the router,
SIGINT the whole system. Every request gets a reply; nothing hangs or is orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from config.settings import Settings
from tests.helpers import System, child_pids, pid_alive, start_serve, stop_serve, wait_for


def _busy_worker_pid(system: System) -> int:
    def find() -> int | None:
        for w in system.stats()["workers"]:
            if w["inflight"] > 0:
                return w["pid"]
        return None
    return wait_for(find, 10, 0.02, "a worker with a request in flight")


def _pids(system: System) -> set[int]:
    return {w["pid"] for w in system.stats()["workers"]}


@pytest.mark.parametrize("fresh_system", [{"open_latency": 1.5}], indirect=True)
def test_worker_killed_mid_request_is_retried_and_replaced(fresh_system: System) -> None:
    system = fresh_system
    before = _pids(system)
    ws = system.ws()
    try:
        ws.send({"id": "slow", "op": "info", "slide": "c.tiff"})  # opening takes 1.5 s
        victim = _busy_worker_pid(system)
        os.kill(victim, signal.SIGKILL)
        header, _ = ws.recv()
        assert header["id"] == "slow" and header["ok"] is True, header
    finally:
        ws.close()
    routing = system.stats()["routing"]
    assert routing["retries"] >= 1 and routing["worker_deaths"] >= 1
    # the launcher starts a replacement that registers with the router
    wait_for(lambda: len(_pids(system) - before) == 1 and len(_pids(system)) == 2, 20,
             what="replacement worker")
    assert victim not in _pids(system)


def test_streaming_clients_survive_repeated_worker_kills(fresh_system: System) -> None:
    """Two clients stream 150 requests each while workers are SIGKILLed twice:
    every request gets exactly one reply (a tile or a clear error); none is lost."""
    system = fresh_system
    results: dict[str, dict] = {}

    def stream(name: str, slide: str) -> None:
        ws = system.ws()
        got: dict = {"ok": 0, "errors": {}, "ids": set()}
        try:
            for i in range(150):
                level = 8 + i % 4
                ws.send({"id": i, "op": "tile", "slide": slide, "level": level,
                         "col": i % 2, "row": (i // 2) % 2})
                header, _ = ws.recv()
                got["ids"].add(header["id"])
                if header["ok"]:
                    got["ok"] += 1
                else:
                    code = header["error"]["code"]
                    got["errors"][code] = got["errors"].get(code, 0) + 1
        finally:
            ws.close()
            results[name] = got

    threads = [threading.Thread(target=stream, args=(n, s))
               for n, s in (("one", "a.tiff"), ("two", "sub/b.tiff"))]
    for t in threads:
        t.start()
    for _ in range(2):
        victim = sorted(_pids(system))[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda v=victim: v not in _pids(system) and len(_pids(system)) == 2, 20,
                 what="worker replaced")
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a client hung"
    for name, got in results.items():
        assert got["ids"] == set(range(150)), name
        assert set(got["errors"]) <= {"worker_lost", "timeout"}, got["errors"]
        assert got["ok"] >= 140, got


def test_router_restart_rebuilds_cache_map_and_clients_recover(fresh_system: System) -> None:
    system = fresh_system
    ws = system.ws()
    try:
        assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"]
        assert ws.tile("sub/b.tiff", 9, 0, 0)[0]["ok"]
        opened = {s for w in system.stats()["workers"] for s in w["open_slides"]}
        assert opened == {"a.tiff", "sub/b.tiff"}
        system.stop_process("router", signal.SIGKILL)

        def unavailable() -> bool:
            header, _ = ws.tile("a.tiff", 10, 0, 1)
            return not header["ok"] and header["error"]["code"] == "unavailable"
        wait_for(unavailable, 15, 0.1, "gateway to report the router unavailable")

        system.spawn("router", "router.cli")
        # workers re-register with their open readers: the map is back before any request
        wait_for(lambda: {s for w in system.stats()["workers"] for s in w["open_slides"]}
                 == opened and len(system.stats()["workers"]) == 2, 20,
                 what="cache map rebuilt from re-registered workers")
        assert system.stats()["routing"]["requests"] == 0  # nothing was re-opened by traffic
        wait_for(lambda: ws.tile("a.tiff", 10, 0, 0)[0]["ok"], 15, 0.1, "tiles again")
        assert system.stats()["routing"]["affinity_misses"] == 0
    finally:
        ws.close()


def test_stopped_worker_is_detected_and_bypassed(fresh_system: System) -> None:
    """SIGSTOP (hung, not dead): heartbeats expire, its slide moves to the live worker."""
    system = fresh_system
    ws = system.ws()
    stopped = None
    try:
        assert ws.tile("c.tiff", 9, 0, 0)[0]["ok"]
        holder = next(w for w in system.stats()["workers"] if "c.tiff" in w["open_slides"])
        stopped = holder["pid"]
        os.kill(stopped, signal.SIGSTOP)
        header, _ = ws.tile("c.tiff", 10, 1, 1)
        assert header["ok"] is True, header
        live = [w for w in system.stats()["workers"] if w["pid"] != stopped]
        assert any("c.tiff" in w["open_slides"] for w in live)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        ws.close()


def test_serve_starts_everything_and_sigint_leaves_no_process(slide_root: Path,
                                                              tmp_path: Path) -> None:
    proc, port = start_serve(slide_root, "--workers", "2", stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        children = child_pids(proc.pid)
        assert len(children) == 3 + Settings().gateway_count  # router, 2 workers, gateways
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert time.monotonic() - start < 20
        wait_for(lambda: not any(pid_alive(p) for p in children), 5, what="children gone")
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}/" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("fresh_system", [{"open_latency": 1.0, "request_timeout": 0.5,
                                           "workers": 1, "worker_capacity": 1}], indirect=True)
def test_requests_past_their_deadline_get_timeout(fresh_system: System) -> None:
    """One slow worker: the request it holds and the one waiting behind it both time out
    with a clear error (not dropped), and the system serves normally afterwards."""
    system = fresh_system
    ws = system.ws()
    try:
        ws.send({"id": "in-flight", "op": "info", "slide": "c.tiff"})
        ws.send({"id": "waiting", "op": "info", "slide": "a.tiff"})
        replies = {}
        for _ in range(2):
            header, _ = ws.recv()
            replies[header["id"]] = header
        for rid in ("in-flight", "waiting"):
            assert replies[rid]["ok"] is False
            assert replies[rid]["error"]["code"] == "timeout", replies[rid]
        assert system.stats()["routing"]["timeouts"] >= 2
        # c.tiff is open now; a cheap request fits the deadline again
        wait_for(lambda: ws.tile("c.tiff", 8, 0, 0)[0]["ok"], 10, 0.1, "service after timeouts")
    finally:
        ws.close()


def _listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port (from /proc/net/tcp; state 0A = LISTEN)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for r in rows if r.split()[1] == f"0100007F:{port:04X}" and r.split()[3] == "0A")


def test_serve_with_two_gateways_sharing_the_port(slide_root: Path) -> None:
    """--gateways 2: two gateway processes on one port (SO_REUSEPORT) both serve; killing
    one leaves the port served by the other while the supervisor restarts it."""
    proc, port = start_serve(slide_root, "--workers", "1", "--gateways", "2")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _listeners(port) == 2, 20, what="both gateways listening")
        children = child_pids(proc.pid)
        assert len(children) == 4  # router, one worker, two gateways
        gateways = {p for p in children
                    if b"wsgateway.cli" in Path(f"/proc/{p}/cmdline").read_bytes()}
        assert len(gateways) == 2
        os.kill(sorted(gateways)[0], signal.SIGKILL)
        # (connections already queued on the killed process's socket are reset by the
        # kernel; new ones go to the survivor)
        wait_for(lambda: _listeners(port) == 1, 10, 0.01, "killed gateway's socket closed")
        for i in range(20):  # every request still answered by the surviving gateway
            with urllib.request.urlopen(f"{url}/dz/a.tiff_files/10/{i % 3}_0.jpeg",
                                        timeout=10) as resp:
                assert resp.status == 200
        wait_for(lambda: len([p for p in child_pids(proc.pid) if pid_alive(p)]) == 4, 20,
                 what="gateway restarted")
    finally:
        stop_serve(proc)
