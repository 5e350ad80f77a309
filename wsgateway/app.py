"""The gateway's Tornado application: routes, shared state, and the viewer page."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import tornado.web

from config.settings import Settings
from wsgateway import http
from wsgateway.hot_tiles import HotTiles
from wsgateway.relay import Reply, RouterClient
from wsgateway.websocket import TileSocketHandler

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
        self.counters: Counter[str] = Counter()
        self.allowed_origins: tuple[str, ...] = ()
        self.hot = HotTiles(settings.gateway_cache_bytes)

    async def request(self, request: dict[str, Any]) -> Reply:
        self.counters["requests"] += 1
        return await self.hot.fetch(request, self.client.request)

    def stats(self) -> dict[str, Any]:
        return {"connections": self.connections, "pending": self.client.pending,
                "router_available": self.client.available,
                "reconnects": self.client.reconnects, **self.hot.stats(), **self.counters}


class _IndexHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        with open(os.path.join(STATIC_DIR, "index.html"), "rb") as fh:
            self.finish(fh.read())


def make_app(gateway: Gateway) -> tornado.web.Application:
    g = {"gateway": gateway}
    slide = r"(.+?)"
    return tornado.web.Application(
        [
            (r"/", _IndexHandler),
            (r"/ws", TileSocketHandler, g),
            (r"/slides", http.SlidesHandler, g),
            (r"/stats", http.StatsHandler, g),
            (r"/healthz", http.HealthHandler, g),
            (rf"/info/{slide}", http.InfoHandler, g),
            (rf"/dz/{slide}\.dzi", http.DziHandler, g),
            (rf"/dz/{slide}_files/(\d+)/(\d+)_(\d+)\.(jpeg|jpg|png)", http.TileHandler, g),
            (r"/assoc/([A-Za-z0-9_.-]+)/(.+)", http.AssociatedHandler, g),
            (r"/osd/(.*)", tornado.web.StaticFileHandler,
             {"path": find_viewer_assets(gateway.settings.viewer_assets)}),
        ],
        static_path=STATIC_DIR,
        websocket_max_message_size=max(65536, gateway.settings.max_message_bytes * 4),
        websocket_ping_interval=20,
        compress_response=False,
    )

