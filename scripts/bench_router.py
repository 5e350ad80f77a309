"""Router overhead: round-trip latency and forwarding rate through a real Broker.

Each party (client, router, echo worker) is its own process, as in production.

Compares (a) client -> echo worker directly with (b) client -> router -> echo worker,
using the real wire protocol and a 12 KB tile-sized payload. The echo worker answers
instantly, so the difference is what the router (and one more hop) costs.

    .venv/bin/python scripts/bench_router.py [--requests 20000] [--window 1|32]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.settings import Settings  # noqa: E402
from router import protocol  # noqa: E402
from router.broker import Broker  # noqa: E402

PAYLOAD = os.urandom(12_000)
REQUEST = {"op": "tile", "slide": "bench.tiff", "level": 12, "col": 3, "row": 4}


def echo_worker(ctx: zmq.Context, endpoint: str, stop: threading.Event, routed: bool) -> None:
    """Answers every REQUEST at once; registers and heartbeats like a real worker."""
    sock = ctx.socket(zmq.ROUTER if routed else zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routed:
        sock.bind(endpoint)
    else:
        sock.setsockopt(zmq.IDENTITY, b"echo")
        sock.connect(endpoint)
        state = {"pid": os.getpid(), "host": "bench", "capacity": 64, "slides": ["bench.tiff"]}
        sock.send_multipart(protocol.encode(protocol.REGISTER, state))
    last = time.monotonic()
    while not stop.is_set():
        if not sock.poll(100):
            continue
        msg = protocol.parse(sock.recv_multipart(copy=False), routed=routed)
        if msg.command != protocol.REQUEST:
            continue
        header = {"tid": msg.header.get("tid"), "rid": msg.header.get("rid"),
                  "r": {"ok": True, "mime": "image/jpeg"}, "slides": ["bench.tiff"]}
        sock.send_multipart(protocol.encode(protocol.REPLY, header, PAYLOAD, msg.identity),
                            copy=False)
        if not routed and time.monotonic() - last > 0.5:
            sock.send_multipart(protocol.encode(protocol.HEARTBEAT, {"slides": ["bench.tiff"]}))
            last = time.monotonic()
    sock.close()


def _run_broker(settings: Settings) -> None:
    Broker(settings, zmq.Context()).run()


def _run_echo(endpoint: str, routed: bool) -> None:
    echo_worker(zmq.Context(), endpoint, threading.Event(), routed)


def drive(ctx: zmq.Context, endpoint: str, n: int, window: int) -> tuple[list[float], float]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sent_at: dict[int, float] = {}
    lat: list[float] = []
    start = time.perf_counter()
    next_rid = 0
    while len(lat) < n:
        while next_rid < n and len(sent_at) < window:
            sent_at[next_rid] = time.perf_counter()
            sock.send_multipart(protocol.encode(protocol.REQUEST, {**REQUEST, "rid": next_rid}))
            next_rid += 1
        if not sock.poll(5000):
            raise RuntimeError("no reply in 5 s")
        msg = protocol.parse(sock.recv_multipart(copy=False))
        if msg.command == protocol.REPLY:
            lat.append(time.perf_counter() - sent_at.pop(msg.header["rid"]))
    elapsed = time.perf_counter() - start
    sock.close()
    return lat, n / elapsed


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--window", type=int, default=1, help="requests in flight")
    args = ap.parse_args()
    ctx = zmq.Context.instance()
    rundir = tempfile.mkdtemp(prefix="trbench-")
    rows = []

    direct = f"ipc://{rundir}/direct.ipc"
    procs = [mp.Process(target=_run_echo, args=(direct, True), daemon=True)]
    procs[-1].start()
    drive(ctx, direct, 2000, args.window)  # warm-up
    rows.append(("direct (no router)", *drive(ctx, direct, args.requests, args.window)))

    settings = Settings(frontend=f"ipc://{rundir}/f.ipc", backend=f"ipc://{rundir}/b.ipc",
                        prefetch=False, heartbeat_interval=1.0)
    procs.append(mp.Process(target=_run_broker, args=(settings,), daemon=True))
    procs.append(mp.Process(target=_run_echo, args=(settings.backend, False), daemon=True))
    for proc in procs[1:]:
        proc.start()
    drive(ctx, settings.frontend, 2000, args.window)  # also waits for the registration
    rows.append(("through router", *drive(ctx, settings.frontend, args.requests, args.window)))
    for proc in procs:
        proc.terminate()
        proc.join(5)

    print(f"\n{args.requests} requests, window {args.window}, payload {len(PAYLOAD)} B, "
          f"cores {os.cpu_count()}")
    print("| path | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for name, lat, rate in rows:
        print(f"| {name} | {rate:,.0f} | {pct(lat, 50):.3f} | {pct(lat, 99):.3f} |")
    added = pct(rows[1][1], 50) - pct(rows[0][1], 50)
    print(f"\nrouter added p50 latency: {added:.3f} ms")


if __name__ == "__main__":
    main()
