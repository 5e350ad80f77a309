"""State shared by every handler of one gateway process, and the one way they relay.

Every handler (websocket, HTTP, IIIF, the lean tile path) checks a client request once
with ``Gateway.accept`` and answers it with ``answer_now`` (stored or hot tile, no
router) or ``request`` (hot-tile cache, coalescing, then the router).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from config.errors import TileRouterError
from config.settings import Settings
from wsgateway.auth import OPEN, Authorizer, Grant
from wsgateway.hot_tiles import HotTiles
from wsgateway.metrics import GatewayMetrics, MetricsExporter
from wsgateway.relay import Reply
from wsgateway.requests import check_request
from wsgateway.router_pool import RouterPool
from wsgateway.stored_tiles import StoredTiles
from wsgateway.wire import HTTP_STATUS

_STORED = {"ok": True, "mime": "image/jpeg"}  # the reply header of a stored tile (read-only)


class Gateway:
    """State shared by every handler of one gateway process."""

    def __init__(self, settings: Settings, client: RouterPool) -> None:
        self.settings = settings
        self.client = client
        self.connections = 0
        self.sockets: set[Any] = set()  # open websocket handlers, closed at shutdown
        self.relaying = 0  # websocket requests accepted and not yet answered
        self.draining = False  # handing off (wsgateway/handoff.py): new sockets get the notice
        self.counters: Counter[str] = Counter()
        self.metrics = GatewayMetrics()  # per-request counts and latency (/metrics)
        self.allowed_origins = tuple(
            o.strip() for o in settings.allowed_origins.split(",") if o.strip())
        self.hot = HotTiles(settings.gateway_cache_bytes)
        self.stored = StoredTiles(settings)
        self.auth = Authorizer(settings.auth_token, settings.auth_secret)
        self.exporter = MetricsExporter(self, settings.metrics_dir)

    def accept(self, obj: Any, grant: Grant) -> dict[str, Any]:
        """The edge check of a client request, made once per request: its canonical form
        (``check_request``), and the caller's grant for its slide."""
        request = check_request(obj, self.settings.max_associated_size)
        if "slide" in request:
            grant.check(request["slide"])
        return request

    async def request(self, request: dict[str, Any], grant: Grant = OPEN,
                      looked_up: bool = False) -> Reply:
        """Answer an accepted request (``accept``) for a caller holding ``grant``
        (``looked_up``: the caller already tried ``answer_now``)."""
        self.counters["requests"] += 1
        started = time.monotonic()
        outcome = "internal"
        try:
            reply = None if looked_up else self._lookup(request)
            if reply is None:
                reply = await self.hot.fetch(request, self.client.request)
            error = reply.header.get("error")
            outcome = "ok" if reply.header.get("ok") else (  # a known code: bounded label
                error.get("code") if isinstance(error, dict)
                and error.get("code") in HTTP_STATUS else "internal")
        except TileRouterError as exc:
            outcome = exc.code
            raise
        finally:
            self.metrics.done(request, outcome, started)
        if request.get("op") == "list" and grant.prefixes is not None:
            slides = [s for s in reply.header.get("slides", []) if grant.allows(s["path"])]
            reply = Reply({**reply.header, "slides": slides}, None)
        return reply

    def answer_now(self, request: dict[str, Any]) -> Reply | None:
        """A reply without the router, for a validated and authorised request: the slide's
        own stored tile, or a hot tile; None when it must be relayed (then ``request``
        counts it in the metrics, else this does)."""
        started = time.monotonic()
        reply = self._lookup(request)
        if reply is not None:
            self.metrics.done(request, "ok", started)
        return reply

    def _lookup(self, request: dict[str, Any]) -> Reply | None:
        if request.get("op") == "tile" and request.get("format") is None:
            request["format"] = self.settings.tile_format  # one cache key per tile
        data = self.stored.tile(request)
        if data is not None:
            return Reply(_STORED, data)
        return self.hot.get(request)

    def reject(self, exc: TileRouterError) -> None:
        """A request refused before ``accept`` or ``request`` took it (counted by code)."""
        self.metrics.reject(exc.code)

    def snapshot_counters(self) -> dict[str, int]:
        """The counters ``/metrics`` exports besides the per-request ones."""
        hot = self.hot.stats()
        return {"hot_hits": hot["hot_hits"], "hot_misses": hot["hot_misses"],
                "coalesced": hot["coalesced"], "stored_hits": self.stored.hits,
                "router_reconnects": self.client.reconnects,
                "router_resent": getattr(self.client, "resent", 0),
                "discarded": self.counters["discarded"]}

    def snapshot_gauges(self) -> dict[str, int]:
        return {"connections": self.connections, "inflight": self.client.pending,
                "hot_bytes": self.hot.stats()["hot_bytes"],
                "router_up": int(self.client.available)}

    def stats(self) -> dict[str, Any]:
        return {"connections": self.connections, "pending": self.client.pending,
                "router_available": self.client.available, "stored_hits": self.stored.hits,
                "reconnects": self.client.reconnects, "resent": self.client.resent,
                "routers": self.client.stats(), **self.hot.stats(), **self.counters}
