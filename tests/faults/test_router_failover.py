"""Three routers, slides sharded over them: kill -9 each in turn, SIGSTOP one, under
websocket load: every request gets exactly one reply, and it is a good one."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from scripts.benchlib.procs import child_pids, pid_alive
from scripts.benchlib.system import WSClient, wait_for
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


class Load:
    """Clients keeping requests in flight; every reply recorded by request id."""

    def __init__(self, port: int, clients: int = 2, window: int = 6) -> None:
        self.port, self.window = port, window
        self.sent: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.errors: list[dict] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(c,)) for c in range(clients)]

    def _client(self, c: int) -> None:
        ws = WSClient(f"ws://127.0.0.1:{self.port}/ws", f"http://127.0.0.1:{self.port}")
        n = inflight = 0
        try:
            for _ in range(100_000):  # bounded; normally ends on stop
                while inflight < self.window and not self.stop.is_set():
                    slide, level, col, row = TILES[(n * 7 + c) % len(TILES)]
                    rid = f"{c}-{n}"
                    ws.send({"id": rid, "op": "tile", "slide": slide, "level": level,
                             "col": col, "row": row, "format": "png" if n % 2 else "jpeg"})
                    self.sent[rid] += 1
                    n, inflight = n + 1, inflight + 1
                if inflight == 0:
                    return
                header, _ = ws.recv()
                self.replies[str(header.get("id"))] += 1
                inflight -= 1
                if not header.get("ok"):
                    self.errors.append(header)
        finally:
            ws.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.mark.timeout(180)
def test_any_router_dies_under_load_and_no_request_fails(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    make_slides(root)
    proc, port = start_serve(root, "--routers", "3", "--workers", "2",
                             "--heartbeat-interval", "0.3", "--heartbeat-liveness", "5",
                             "--gateway-cache-bytes", "0", "--prefetch", "false",
                             "--tile-cache-bytes", "0")
    try:
        wait_for(lambda: len(_routers(proc.pid)) == 3, 20, what="three routers")
        with Load(port) as load:
            wait_for(lambda: sum(load.replies.values()) > 50, 30, what="load running")
            for front in sorted(_routers(proc.pid)):
                victim = _routers(proc.pid)[front]
                os.kill(victim, signal.SIGKILL)
                served = sum(load.replies.values())
                wait_for(lambda f=front, v=victim: _routers(proc.pid).get(f, v) != v, 20,
                         what="router restarted")
                wait_for(lambda s=served: sum(load.replies.values()) > s + 30, 30,
                         what="service continues")
            stopped = next(iter(_routers(proc.pid).values()))
            os.kill(stopped, signal.SIGSTOP)
            served = sum(load.replies.values())
            try:
                wait_for(lambda: sum(load.replies.values()) > served + 50, 30,
                         what="service continues around a stopped router")
            finally:
                os.kill(stopped, signal.SIGCONT)
        assert load.errors == []
        assert set(load.sent) == set(load.replies), "every request answered"
        assert max(load.replies.values()) == 1, "no request answered twice"
        assert sum(load.replies.values()) > 200
        def stats() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
                return json.loads(resp.read())

        wait_for(lambda: len(stats()["routers"]) == 3, 20, what="all routers back in /stats")
        stats = stats()
        assert len(stats["gateway"]["routers"]) == 3
        assert stats["gateway"]["resent"] > 0  # the killed routers' pending requests
        assert sum(r["routing"]["requests"] for r in stats["routers"]) > 0
    finally:
        stop_serve(proc)
    assert not pid_alive(proc.pid)
