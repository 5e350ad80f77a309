"""Websocket viewers with a fixed number of tile requests in flight, and their report.

The failover and router-join benchmarks load the system the same way and judge it the
same way: every request answered once and good, latency by phase (steady, or just after
a fault they caused).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from .metrics import percentile
from .system import WSClient


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


def print_outcome(viewers: Viewers, phase_of: Callable[[float], str], phases: list[str],
                  resent: int) -> None:
    """Requests, replies, unanswered, answered twice, error codes; then p50/p99/max
    latency per phase (``phase_of`` names the phase of a reply time)."""
    by_phase: dict[str, list[float]] = {name: [] for name in phases}
    for at, latency in viewers.samples:
        by_phase[phase_of(at)].append(latency * 1000)
    lost = len(set(viewers.sent) - set(viewers.replies))
    twice = sum(1 for n in viewers.replies.values() if n > 1)
    print(f"requests {len(viewers.sent)}, replies {sum(viewers.replies.values())}, "
          f"unanswered {lost}, answered twice {twice}, outcomes {dict(viewers.codes)}, "
          f"re-sent by the gateway {resent}")
    print("| phase | replies | p50 ms | p99 ms | max ms |")
    print("|---|--:|--:|--:|--:|")
    for name, values in by_phase.items():
        ordered = sorted(values)
        print(f"| {name} | {len(values)} | {percentile(ordered, 50):.1f} | "
              f"{percentile(ordered, 99):.1f} | {max(values, default=0):.1f} |")
