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
from collections.abc import Callable, Sequence
from typing import Any

from .metrics import percentile
from .system import WSClient

# the tile fields of client c's n-th request (level, col, row, slide, format...)
NextTile = Callable[[int, int, random.Random], dict[str, Any]]


def random_tiles(slides: list[tuple[str, int]]) -> NextTile:
    """Tiles near the top of random slides: (slide, its top DeepZoom level) pairs, a level
    among the top three, a position within the first 32 x 24 tiles of level top."""
    def pick(_c: int, _n: int, rng: random.Random) -> dict[str, Any]:
        slide, top = rng.choice(slides)
        level = top - rng.randrange(3)
        span = 2 ** (top - level + 3)
        return {"slide": slide, "level": level, "col": rng.randrange(max(1, 32 // span)),
                "row": rng.randrange(max(1, 24 // span))}
    return pick


class Viewers:
    """``clients`` threads, client c on ``ports[c % len(ports)]`` (one per gateway), each
    keeping ``window`` tile requests in flight; every reply is counted by request id and
    its latency recorded. ``stop`` (or leaving the ``with``) ends the sending; each client
    then waits for its outstanding replies."""

    def __init__(self, ports: Sequence[int], next_tile: NextTile, clients: int,
                 window: int, max_rounds: int = 10_000_000) -> None:
        self.ports, self.next_tile, self.window = list(ports), next_tile, window
        self.max_rounds = max_rounds  # replies a client waits for at most (a bound)
        self.sent: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.errors: list[dict[str, Any]] = []  # the headers of replies that are not ok
        self.failures: list[str] = []  # a client that died (its lost replies show too)
        self.samples: list[tuple[float, float]] = []  # (reply time, latency)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in range(clients)]

    @property
    def answered(self) -> int:
        """Replies so far (list() copies in one step: the clients add keys meanwhile)."""
        return sum(list(self.replies.values()))

    def __enter__(self) -> Viewers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self, c: int) -> None:
        port = self.ports[c % len(self.ports)]
        try:
            ws = WSClient(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
        except Exception as exc:
            self.failures.append(f"client {c}: {exc!r}")
            return
        rng = random.Random(c)
        started: dict[str, float] = {}
        n = 0
        try:
            for _ in range(self.max_rounds):
                while len(started) < self.window and not self.stop.is_set():
                    rid = f"{c}-{n}"
                    ws.send({"id": rid, "op": "tile", **self.next_tile(c, n, rng)})
                    n += 1
                    started[rid] = time.monotonic()
                    self.sent[rid] += 1
                if not started:
                    return
                header, _ = ws.recv()
                rid = str(header.get("id"))
                now = time.monotonic()
                self.replies[rid] += 1
                if header.get("ok"):
                    self.codes["ok"] += 1
                else:
                    self.codes[header["error"]["code"]] += 1
                    self.errors.append(header)
                if rid in started:
                    self.samples.append((now, now - started.pop(rid)))
        except Exception as exc:
            self.failures.append(f"client {c}: {exc!r}")
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
    for failure in viewers.failures:
        print(f"viewer failed: {failure}")
    print("| phase | replies | p50 ms | p99 ms | max ms |")
    print("|---|--:|--:|--:|--:|")
    for name, values in by_phase.items():
        ordered = sorted(values)
        print(f"| {name} | {len(values)} | {percentile(ordered, 50):.1f} | "
              f"{percentile(ordered, 99):.1f} | {max(values, default=0):.1f} |")
