"""The gateway's Tornado application: routes, shared state, and the viewer page."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import tornado.web

from config.settings import Settings
from router.errors import TileRouterError
from wsgateway import http, iiif
from wsgateway.auth import COOKIE, OPEN, Authorizer, Grant
from wsgateway.hot_tiles import HotTiles
from wsgateway.relay import Reply, RouterClient
from wsgateway.stored_tiles import StoredTiles
from wsgateway.websocket import TileSocketHandler

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STORED = {"ok": True, "mime": "image/jpeg"}  # the reply header of a stored tile (read-only)
_OSD_SUBDIR = os.path.join("node_modules", "openseadragon", "build", "openseadragon")


def find_viewer_assets(configured: str = "") -> str:
    """OpenSeadragon's build directory: configured, else ./node_modules, else the repo's."""
    candidates = [configured] if configured else [
        os.path.join(os.getcwd(), _OSD_SUBDIR), os.path.join(_REPO_ROOT, _OSD_SUBDIR)]
    for path in candidates:
        if os.path.isfile(os.path.join(path, "openseadragon.min.js")):
            return path
    return candidates[0]


class Gateway:
    """State shared by every handler of one gateway process."""

    def __init__(self, settings: Settings, client: RouterClient) -> None:
        self.settings = settings
        self.client = client
        self.connections = 0
        self.sockets: set[Any] = set()  # open websocket handlers, closed at shutdown
        self.relaying = 0  # websocket requests accepted and not yet answered
        self.draining = False
        self.last_message_at = 0.0  # time.monotonic() of the last websocket message
        self.counters: Counter[str] = Counter()
        self.allowed_origins = tuple(
            o.strip() for o in settings.allowed_origins.split(",") if o.strip())
        self.hot = HotTiles(settings.gateway_cache_bytes)
        self.stored = StoredTiles(settings)
        self.auth = Authorizer(settings.auth_token, settings.auth_secret)

    async def request(self, request: dict[str, Any], grant: Grant = OPEN,
                      looked_up: bool = False) -> Reply:
        """Relay a validated request for a caller holding ``grant`` (``looked_up``: the
        caller already tried ``answer_now``)."""
        self.counters["requests"] += 1
        if "slide" in request:
            grant.check(request["slide"])
        reply = None if looked_up else self.answer_now(request)
        if reply is None:
            reply = await self.hot.fetch(request, self.client.request)
        if request.get("op") == "list" and grant.prefixes is not None:
            slides = [s for s in reply.header.get("slides", []) if grant.allows(s["path"])]
            reply = Reply({**reply.header, "slides": slides}, None)
        return reply

    def answer_now(self, request: dict[str, Any]) -> Reply | None:
        """A reply without the router, for a validated and authorised request: the slide's
        own stored tile, or a hot tile; None when it must be relayed."""
        if request.get("op") == "tile" and request.get("format") is None:
            request["format"] = self.settings.tile_format  # one cache key per tile
        data = self.stored.tile(request)
        if data is not None:
            return Reply(_STORED, data)
        return self.hot.get(request)

    def stats(self) -> dict[str, Any]:
        return {"connections": self.connections, "pending": self.client.pending,
                "router_available": self.client.available, "stored_hits": self.stored.hits,
                "reconnects": self.client.reconnects, **self.hot.stats(), **self.counters}


class _IndexHandler(tornado.web.RequestHandler):
    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def get(self) -> None:
        token = self.get_query_argument("token", None)
        if token and self.gateway.auth.enabled:
            try:
                self.gateway.auth.check(token)
            except TileRouterError:
                raise tornado.web.HTTPError(401, "invalid token") from None
            self.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                            secure=self.request.protocol == "https")
        self.set_header("Cache-Control", "no-cache")
        with open(os.path.join(STATIC_DIR, "index.html"), "rb") as fh:
            self.finish(fh.read())


def make_app(gateway: Gateway) -> tornado.web.Application:
    g = {"gateway": gateway}
    slide = r"(.+?)"
    return tornado.web.Application(
        [
            (r"/", _IndexHandler, g),
            (r"/ws", TileSocketHandler, g),
            (r"/slides", http.SlidesHandler, g),
            (r"/stats", http.StatsHandler, g),
            (r"/healthz", http.HealthHandler, g),
            (rf"/info/{slide}", http.InfoHandler, g),
            (rf"/dz/{slide}\.dzi", http.DziHandler, g),
            (rf"/dz/{slide}_files/(\d+)/(\d+)_(\d+)\.(jpeg|jpg|png)", http.TileHandler, g),
            (r"/assoc/([A-Za-z0-9_.-]+)/(.+)", http.AssociatedHandler, g),
            *iiif.routes(gateway),
            (r"/osd/(.*)", tornado.web.StaticFileHandler,
             {"path": find_viewer_assets(gateway.settings.viewer_assets)}),
        ],
        static_path=STATIC_DIR,
        websocket_max_message_size=max(65536, gateway.settings.max_message_bytes * 4),
        websocket_ping_interval=20,
        compress_response=False,
    )

