"""Websocket clients keeping requests in flight through a fault, every reply recorded by
request id: what the router-failover tests assert "exactly one good reply" on."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from scripts.benchlib.system import WSClient

Tile = tuple[str, int, int, int]  # slide, level, col, row


class Load:
    """``clients`` threads, client c on ``ports[c % len(ports)]`` (one per gateway), each
    with up to ``window`` requests in flight over ``tiles``; on exit every client stops
    sending and waits for its outstanding replies."""

    def __init__(self, ports: Sequence[int], tiles: Sequence[Tile], clients: int = 2,
                 window: int = 6) -> None:
        self.ports, self.tiles, self.window = list(ports), list(tiles), window
        self.sent: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.errors: list[dict] = []
        self.failures: list[str] = []  # a client that died (its lost replies show too)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(c,)) for c in range(clients)]

    @property
    def answered(self) -> int:
        """Replies so far (list() copies in one step: the clients add keys meanwhile)."""
        return sum(list(self.replies.values()))

    def _client(self, c: int) -> None:
        port = self.ports[c % len(self.ports)]
        try:
            ws = WSClient(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
        except Exception as exc:
            self.failures.append(f"client {c}: {exc!r}")
            return
        n = inflight = 0
        try:
            for _ in range(1_000_000):  # bounded; normally ends on stop
                while inflight < self.window and not self.stop.is_set():
                    slide, level, col, row = self.tiles[(n * 7 + c) % len(self.tiles)]
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
        except Exception as exc:
            self.failures.append(f"client {c}: {exc!r}")
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

    def assert_exactly_one_good_reply_each(self) -> None:
        assert self.failures == []
        assert self.errors == [], f"{len(self.errors)} errors, first {self.errors[:3]}"
        assert set(self.sent) == set(self.replies), "every request answered"
        assert max(self.replies.values()) == 1, "no request answered twice"
