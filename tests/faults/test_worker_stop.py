"""A worker told to stop under steady load stops: it answers what it holds, says
DISCONNECT and returns, even though the next request is always already waiting.

The router here is the test's own ROUTER socket (real ZeroMQ, real worker, real
slides), so the load can be made truly steady: every reply is answered at once with
the next request, keeping the worker's two slots full."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from config.settings import Settings
from router import protocol
from workers.worker import Worker


def test_worker_stops_while_requests_keep_coming(slide_root: Path, tmp_path: Path) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/backend.ipc"
    router.bind(endpoint)
    settings = Settings(slides=str(slide_root), backend=endpoint, heartbeat_interval=0.2,
                        heartbeat_liveness=5, worker_capacity=2, tile_cache_bytes=0)
    worker = Worker(settings, context=ctx)
    runner = threading.Thread(target=worker.run, name="worker")
    runner.start()
    tid = 0
    replies = 0
    stopped_at = None
    saw_disconnect = False
    try:
        def request(identity: bytes) -> None:
            nonlocal tid
            tid += 1
            # full-resolution tiles and no tile cache: each render outlasts our round trip
            header = {"tid": tid, "op": "tile", "slide": "a.tiff", "level": 12,
                      "col": tid % 12, "row": tid // 12 % 9}
            router.send_multipart(protocol.encode(protocol.REQUEST, header, None, identity))

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not saw_disconnect:  # bounded by time
            if not router.poll(1000):
                continue
            msg = protocol.parse(router.recv_multipart(), routed=True)
            if msg.command == protocol.REGISTER:
                request(msg.identity)
                request(msg.identity)
            elif msg.command == protocol.REPLY:
                replies += 1
                assert msg.header["r"]["ok"] is True, msg.header
                if replies == 50:
                    worker.stop.set()
                    stopped_at = replies
                request(msg.identity)  # steady load: the next one is always waiting
            elif msg.command == protocol.DISCONNECT:
                saw_disconnect = True
        runner.join(10)
        assert stopped_at is not None, "the worker never served 50 requests"
        assert saw_disconnect and not runner.is_alive(), "the worker did not stop under load"
        assert replies < stopped_at + 2 * 64  # it left soon after being told to
    finally:
        worker.stop.set()
        runner.join(10)
        router.close(linger=0)
        ctx.term()
