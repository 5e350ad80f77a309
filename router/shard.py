"""This router's shard as the gateways draw it: which slides they send here.

A router never decides its shard (every gateway ranks routers per slide by rendezvous
hash, wsgateway/router_pool.py); it sees it. Counting the slides it is sent, over the
last minute or two, lets ``/stats`` show the shard, and lets an operator see a dead
router's slides arrive at the next one and leave again when it is back.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

WINDOW = 60.0  # seconds per generation; the answer covers the last one or two
MAX_SLIDES = 100_000  # distinct slides counted per generation (memory bound)
TOP = 10


class ShardStats:
    """Requests per slide in two rotating generations, bounded in memory."""

    def __init__(self, window: float = WINDOW, max_slides: int = MAX_SLIDES) -> None:
        self.window, self.max_slides = window, max_slides
        self.current: Counter[str] = Counter()
        self.previous: Counter[str] = Counter()
        self.rotated = time.monotonic()
        self.dropped = 0  # slides not counted because a generation was full

    def note(self, slide: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self.rotated >= self.window:
            stale = now - self.rotated >= 2 * self.window
            self.previous = Counter() if stale else self.current
            self.current, self.rotated = Counter(), now
        if slide in self.current or len(self.current) < self.max_slides:
            self.current[slide] += 1
        else:
            self.dropped += 1

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Distinct slides and requests in the window, and the busiest slides."""
        now = time.monotonic() if now is None else now
        both = self.current.copy()
        if now - self.rotated < self.window:
            both.update(self.previous)
        elif now - self.rotated >= 2 * self.window:
            both = Counter()
        return {"window_seconds": self.window * 2, "slides": len(both),
                "requests": sum(both.values()),
                "top": [[slide, n] for slide, n in both.most_common(TOP)],
                "uncounted": self.dropped}
