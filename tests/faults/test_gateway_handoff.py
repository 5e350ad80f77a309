"""Gateway hand-off: two gateways share the port (SO_REUSEPORT) and one is told to stop
while websocket clients keep requests in flight on it. The clients follow its reconnect
notice to the sibling: every request gets exactly one reply and none is an error, new
connections land on the sibling at once, and the stopped gateway exits 0."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import struct
import threading
import time
from pathlib import Path

import pytest
import websocket

from scripts.benchlib.slides import slide_geometry
from scripts.benchlib.soak_clients import Client
from tests.helpers import System, WSClient, wait_for

CLIENTS, INFLIGHT = 4, 4


def _server_pid(client: websocket.WebSocket, port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server end of ``client``'s TCP connection (from
    /proc/net/tcp and each process' fds)."""
    local = client.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if (int(f[1].rsplit(":", 1)[1], 16) == port
                        and int(f[2].rsplit(":", 1)[1], 16) == local and f[9] != "0"):
                    inodes.add(f"socket:[{f[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return pid
    return None


class Unaware(threading.Thread):
    """A client that does not know the notice: one request at a time, until closed."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        super().__init__(daemon=True)
        self.ws, self.sent, self.codes, self.notices = ws, 0, [], []
        self.close_code: int | None = None
        self.closed_with_error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 20
        try:
            while self.close_code is None and time.monotonic() < deadline:
                self.ws.send(json.dumps({"id": self.sent, "op": "tile", "slide": "a.tiff",
                                         "level": 10 + self.sent % 3, "col": 0, "row": 0}))
                self.sent += 1
                while self.close_code is None:  # its reply (after the notice, if any)
                    opcode, data = self.ws.recv_data()
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        self.close_code = struct.unpack(">H", data[:2])[0]
                        break
                    header = WSClient.parse(opcode, data)[0]
                    if header["id"] is None:
                        self.notices.append(header)
                        continue
                    self.codes.append("ok" if header["ok"] else header["error"]["code"])
                    break
        except Exception as exc:  # the test asserts on it
            self.closed_with_error = repr(exc)


@pytest.mark.parametrize("fresh_system", [{"gateways": 2, "drain_timeout": 3.0,
                                           "gateway_cache_bytes": 0}], indirect=True)
def test_sigterm_hands_websockets_to_the_sibling_without_an_error(
        fresh_system: System, slide_root: Path) -> None:
    system = fresh_system
    port = system.port
    first = system.procs["gateway"]  # alone on the port yet: every client lands on it
    geoms = {name: slide_geometry(str(slide_root / name), system.settings)
             for name in ("a.tiff", "sub/b.tiff")}
    stop = threading.Event()
    clients = [Client(i, f"ws://127.0.0.1:{port}/ws", system.base, geoms, INFLIGHT, 20.0,
                      time.monotonic(), stop, seed=i) for i in range(CLIENTS)]
    for c in clients:
        c.start()
    unaware = Unaware(system.ws().sock)
    keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    tile = "/dz/a.tiff_files/10/0_0.jpeg"
    try:
        keep_alive.request("GET", tile)
        first_reply = keep_alive.getresponse()
        assert first_reply.status == 200 and first_reply.read()
        assert first_reply.getheader("Connection") != "close"
        wait_for(lambda: all(c.stats.replies >= 20 for c in clients), 20, what="load")
        sibling = system.spawn("gateway-2", "wsgateway.cli")
        wait_for(lambda: b"gateway listening" in (system.rundir / "gateway-2.log").read_bytes(),
                 20, what="sibling listening")
        pids = [first.pid, sibling.pid]
        assert all(_server_pid(c.sock, port, pids) == first.pid for c in clients)
        unaware.start()
        wait_for(lambda: unaware.sent > 5, 10, what="unaware client under way")

        first.send_signal(signal.SIGTERM)
        # the clients move while the first gateway still runs (the unaware client keeps it
        # busy until drain_timeout): their new connections are the sibling's
        wait_for(lambda: all(c.stats.handoffs == 1 and c.old is None and c.sock is not None
                             and _server_pid(c.sock, port, pids) == sibling.pid
                             for c in clients), 10, 0.02, what="clients on the sibling")
        fresh = system.ws()
        try:
            assert _server_pid(fresh.sock, port, pids) == sibling.pid
            assert fresh.tile("a.tiff", 11, 0, 0)[0]["ok"] is True
        finally:
            fresh.close()
        # an HTTP keep-alive connection: answered, told to close
        keep_alive.request("GET", tile)
        last_reply = keep_alive.getresponse()
        assert last_reply.status == 200 and last_reply.read()
        assert last_reply.getheader("Connection") == "close"
        assert first.poll() is None, "the first gateway should still be draining"
        assert first.wait(15) == 0
        moved = [c.stats.replies for c in clients]
        wait_for(lambda: all(c.stats.replies >= n + 10 for c, n in zip(clients, moved,
                                                                        strict=True)),
                 15, what="load on the sibling")
    finally:
        stop.set()
        for c in clients:
            c.give_up_at = time.monotonic() + 15
        for c in clients:
            c.join(20)
        unaware.join(20)
        unaware.ws.close()
        keep_alive.close()

    for c in clients:
        assert not c.is_alive() and not c.pending, (c.idx, sorted(c.pending)[:10])
        assert sorted(c.done) == list(range(1, c.next_id + 1)), c.idx  # exactly one reply
        assert c.stats.replies == c.stats.sent == c.next_id
        assert dict(c.stats.outcomes) == {"ok": c.stats.sent}, (c.idx, c.stats.outcomes)
        assert c.stats.duplicates == c.stats.unknown_ids == c.stats.bad_payloads == 0
        assert c.stats.disconnects == [] and c.stats.connect_failures == 0, c.stats
    # the client that ignores the notice is answered to the end, then closed with 1001
    assert unaware.closed_with_error is None, unaware.closed_with_error
    assert [n["notice"] for n in unaware.notices] == ["reconnect"]
    assert set(unaware.codes) == {"ok"} and len(unaware.codes) >= unaware.sent - 1
    assert unaware.close_code == 1001
