#!/usr/bin/env python3
"""Routers killed under load: requests, replies, errors, duplicates and latency per phase.

``tilerouter serve --routers N`` on generated slides; websocket viewers keep requests in
flight (distinct tiles, the gateway's hot cache off, so every request crosses a router)
while a router is killed with SIGKILL every ``--every`` seconds (the supervisor restarts
it). Latencies are grouped by phase: "steady" (no router died in the last 5 s) and
"failover" (the 5 s after a kill). Prints one table; asserts nothing.

    .venv/bin/python scripts/bench_failover.py [--duration 300 --every 30 --routers 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib.procs import free_port
from benchlib.routers import router_processes
from benchlib.system import wait_for
from benchlib.viewers import Viewers, print_outcome, random_tiles

from readers.demo_slide import write_demo_slide

WINDOW_AFTER_KILL = 5.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--every", type=float, default=30)
    ap.add_argument("--routers", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--heartbeat", default="0.25x4", help="interval x liveness")
    args = ap.parse_args()
    interval, liveness = args.heartbeat.split("x")
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        slides = []
        for i in range(6):
            write_demo_slide(Path(tmp) / f"s{i}.tiff", 8000, 6000, seed=i)
            slides.append((f"s{i}.tiff", 13))
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "workers.serve", "serve", "--slides", tmp, "--port",
             str(port), "--stats-port", "0", "--routers", str(args.routers), "--workers",
             str(args.workers), "--heartbeat-interval", interval, "--heartbeat-liveness",
             liveness, "--gateway-cache-bytes", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kills: list[float] = []
        try:
            wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                    timeout=2).status == 200, 60)
            wait_for(lambda: len(router_processes(serve.pid)) == args.routers, 30)
            viewers = Viewers([port], random_tiles(slides), args.clients, args.window)
            for t in viewers.threads:
                t.start()
            start = time.monotonic()
            next_kill = start + args.every
            while time.monotonic() - start < args.duration:
                time.sleep(0.1)
                if time.monotonic() >= next_kill:
                    pids = [r.pid for r in router_processes(serve.pid)]
                    if pids:
                        os.kill(random.Random(len(kills)).choice(pids), signal.SIGKILL)
                        kills.append(time.monotonic())
                    next_kill += args.every
            viewers.stop.set()
            for t in viewers.threads:
                t.join(60)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
                resent = json.loads(r.read())["gateway"].get("resent")
        finally:
            serve.send_signal(signal.SIGINT)
            serve.wait(30)

    def phase(at: float) -> str:
        return ("failover" if any(0 <= at - k < WINDOW_AFTER_KILL for k in kills)
                else "steady")

    print(f"{args.routers} routers, {args.workers} workers, {args.clients} viewers x "
          f"{args.window} in flight, {args.duration:.0f} s, a router SIGKILLed every "
          f"{args.every:.0f} s ({len(kills)} kills), heartbeat {args.heartbeat}")
    print_outcome(viewers, phase, ["steady", "failover"], resent)

if __name__ == "__main__":
    main()
