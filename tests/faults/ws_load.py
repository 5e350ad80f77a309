"""Websocket clients keeping requests in flight through a fault, every reply recorded by
request id: what the router-failover tests assert "exactly one good reply" on. The
client is the benchmarks' (scripts/benchlib/viewers.py) over a fixed list of tiles."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from scripts.benchlib.viewers import Viewers

Tile = tuple[str, int, int, int]  # slide, level, col, row


class Load(Viewers):
    """``clients`` threads, client c on ``ports[c % len(ports)]`` (one per gateway), each
    with up to ``window`` requests in flight over ``tiles`` (JPEG and PNG in turn); on
    exit every client stops sending and waits for its outstanding replies."""

    def __init__(self, ports: Sequence[int], tiles: Sequence[Tile], clients: int = 2,
                 window: int = 6) -> None:
        tiles = list(tiles)

        def next_tile(c: int, n: int, _rng: random.Random) -> dict[str, Any]:
            slide, level, col, row = tiles[(n * 7 + c) % len(tiles)]
            return {"slide": slide, "level": level, "col": col, "row": row,
                    "format": "png" if n % 2 else "jpeg"}

        super().__init__(ports, next_tile, clients, window, max_rounds=1_000_000)

    def __enter__(self) -> Load:
        super().__enter__()
        return self

    def assert_exactly_one_good_reply_each(self) -> None:
        assert self.failures == []
        assert self.errors == [], f"{len(self.errors)} errors, first {self.errors[:3]}"
        assert set(self.sent) == set(self.replies), "every request answered"
        assert max(self.replies.values()) == 1, "no request answered twice"
