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
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from benchlib.procs import child_pids, free_port
from benchlib.system import WSClient, wait_for

from readers.demo_slide import write_demo_slide

WINDOW_AFTER_KILL = 5.0


def _router_pids(serve_pid: int) -> list[int]:
    return sorted(p for p in child_pids(serve_pid)
                  if b"router.cli" in Path(f"/proc/{p}/cmdline").read_bytes())


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0


class Viewers:
    """Clients with ``window`` requests in flight; latency recorded per reply."""

    def __init__(self, port: int, slides: list[tuple[str, int]], clients: int,
                 window: int) -> None:
        self.port, self.slides, self.window = port, slides, window
        self.sent: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.samples: list[tuple[float, float]] = []  # (reply time, latency)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in range(clients)]

    def _run(self, c: int) -> None:
        ws = WSClient(f"ws://127.0.0.1:{self.port}/ws", f"http://127.0.0.1:{self.port}")
        rng = random.Random(c)
        started: dict[str, float] = {}
        n = 0
        try:
            for _ in range(10_000_000):
                while len(started) < self.window and not self.stop.is_set():
                    slide, top = rng.choice(self.slides)
                    level = top - rng.randrange(3)
                    span = 2 ** (top - level + 3)
                    rid = f"{c}-{n}"
                    n += 1
                    ws.send({"id": rid, "op": "tile", "slide": slide, "level": level,
                             "col": rng.randrange(max(1, 32 // span)),
                             "row": rng.randrange(max(1, 24 // span))})
                    started[rid] = time.monotonic()
                    self.sent[rid] += 1
                if not started:
                    return
                header, _ = ws.recv()
                rid = str(header.get("id"))
                now = time.monotonic()
                self.replies[rid] += 1
                self.codes["ok" if header.get("ok") else header["error"]["code"]] += 1
                if rid in started:
                    self.samples.append((now, now - started.pop(rid)))
        finally:
            ws.close()


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
            wait_for(lambda: len(_router_pids(serve.pid)) == args.routers, 30)
            viewers = Viewers(port, slides, args.clients, args.window)
            for t in viewers.threads:
                t.start()
            start = time.monotonic()
            next_kill = start + args.every
            while time.monotonic() - start < args.duration:
                time.sleep(0.1)
                if time.monotonic() >= next_kill:
                    pids = _router_pids(serve.pid)
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

    by_phase: dict[str, list[float]] = {"steady": [], "failover": []}
    for at, latency in viewers.samples:
        by_phase[phase(at)].append(latency)
    lost = len(set(viewers.sent) - set(viewers.replies))
    dupes = sum(1 for n in viewers.replies.values() if n > 1)
    print(f"{args.routers} routers, {args.workers} workers, {args.clients} viewers x "
          f"{args.window} in flight, {args.duration:.0f} s, a router SIGKILLed every "
          f"{args.every:.0f} s ({len(kills)} kills), heartbeat {args.heartbeat}")
    print(f"requests {len(viewers.sent)}, replies {sum(viewers.replies.values())}, "
          f"unanswered {lost}, answered twice {dupes}, outcomes {dict(viewers.codes)}, "
          f"re-sent by the gateway {resent}")
    print("| phase | replies | p50 ms | p99 ms | max ms |")
    print("|---|--:|--:|--:|--:|")
    for name, values in by_phase.items():
        print(f"| {name} | {len(values)} | {_pct(values, 0.5):.1f} | {_pct(values, 0.99):.1f} "
              f"| {max(values, default=0) * 1000:.1f} |")


if __name__ == "__main__":
    main()
