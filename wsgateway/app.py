"""The gateway's Tornado application: its routes and the viewer page.

The state the handlers share lives in ``wsgateway.gateway``; handler modules import
that, never this module, so the imports run one way: app -> handlers -> gateway.
"""

from __future__ import annotations

import os

import tornado.web

from config.errors import TileRouterError
from wsgateway import http, iiif
from wsgateway.auth import COOKIE
from wsgateway.gateway import Gateway
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
            (r"/readyz", http.ReadyHandler, g),
            (r"/metrics", http.MetricsHandler, g),
            (rf"/info/{slide}", http.InfoHandler, g),
            (rf"/dz/{slide}\.dzi", http.DziHandler, g),
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

