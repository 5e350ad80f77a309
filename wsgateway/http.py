"""HTTP endpoints: slide list, DZI, info, associated images, stats, health, metrics.

Every one goes through the same router and workers as the websocket. DeepZoom tile
GETs have one path of their own in front of the application (``fast_http.py``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from tornado.web import HTTPError, RequestHandler

from config.errors import BadRequest, TileRouterError, Unavailable, error_from_wire
from config.logs import REQUEST_ID, new_request_id, request_id_from
from router.protocol import SERVICE_READY, SERVICE_STATS, payload_bytes
from wsgateway.auth import COOKIE, OPEN, Grant
from wsgateway.metrics import CONTENT_TYPE
from wsgateway.relay import Reply
from wsgateway.wire import http_error_body, http_status

if TYPE_CHECKING:
    from wsgateway.gateway import Gateway

DZI_NS = "http://schemas.microsoft.com/deepzoom/2008"


class ApiError(HTTPError):
    def __init__(self, exc: TileRouterError) -> None:
        super().__init__(http_status(exc.code), reason=None)
        self.error = exc


class RelayHandler(RequestHandler):
    """Base: relay one request and turn TileRouterErrors into JSON error responses."""

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.grant = OPEN
        # the client's X-Request-Id if usable, else a new one (logs, error bodies)
        self.request_id = (request_id_from(self.request.headers.get("X-Request-Id"))
                           or new_request_id())

    def prepare(self) -> None:
        self.grant = authenticate(self, self.gateway)

    def set_default_headers(self) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")

    def compute_etag(self) -> None:
        """No ETag: hashing every tile body cost a measurable share of the gateway."""
        return None

    async def relay(self, request: dict[str, Any]) -> Reply:
        try:
            accepted = self.gateway.accept(request, self.grant)
        except TileRouterError as exc:
            self.gateway.reject(exc)
            raise ApiError(exc) from None
        token = REQUEST_ID.set(self.request_id)
        try:
            reply = await self.gateway.request(accepted, self.grant)
        except TileRouterError as exc:
            raise ApiError(exc) from None
        finally:
            REQUEST_ID.reset(token)
        if not reply.header.get("ok"):
            raise ApiError(error_from_wire(reply.header.get("error") or {}))
        return reply

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.error.code, exc.error.message
        else:
            code, message = "http", self._reason
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Request-Id", self.request_id)
        self.finish(http_error_body(code, message, self.request_id))

    def write_image(self, reply: Reply) -> None:
        self.set_header("Content-Type", reply.header.get("mime", "application/octet-stream"))
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish(payload_bytes(reply.payload))

    def write_json(self, obj: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj))


def _public(header: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in header.items() if k not in ("rid", "ok")}


class SlidesHandler(RelayHandler):
    async def get(self) -> None:
        request: dict[str, Any] = {"op": "list"}
        for key in ("offset", "limit"):
            value = self.get_query_argument(key, None)
            if value is not None:
                request[key] = _num(value)
        prefix = self.get_query_argument("prefix", None)
        if prefix:
            request["prefix"] = prefix
        header = (await self.relay(request)).header
        self.write_json({k: header[k] for k in ("slides", "total", "next") if k in header})


class DziHandler(RelayHandler):
    async def get(self, slide: str) -> None:
        info = (await self.relay({"op": "info", "slide": slide})).header
        self.set_header("Content-Type", "application/xml")
        self.finish(dzi_xml(info, self.gateway.settings.tile_format))


def dzi_xml(info: dict[str, Any], fmt: str) -> str:
    """The same XML as ``DeepZoomGenerator.get_dzi(fmt)``."""
    return (
        f"<Image TileSize=\"{int(info['tile_size'])}\" Overlap=\"{int(info['overlap'])}\" "
        f"Format={quoteattr(fmt)} xmlns={quoteattr(DZI_NS)}>"
        f"<Size Width=\"{int(info['width'])}\" Height=\"{int(info['height'])}\" /></Image>"
    )


class AssociatedHandler(RelayHandler):
    async def get(self, name: str, slide: str) -> None:
        size = self.get_query_argument("size", "256")
        request = {"op": "associated", "slide": slide, "name": name, "size": _num(size)}
        self.write_image(await self.relay(request))


class InfoHandler(RelayHandler):
    async def get(self, slide: str) -> None:
        self.write_json(_public((await self.relay({"op": "info", "slide": slide})).header))


class StatsHandler(RelayHandler):
    async def get(self) -> None:
        """One router's stats at the top (any: workers register with all), and with
        several routers each one's own under ``routers`` (its shard's counters)."""
        links = [link for link in self.gateway.client.links if link.available]
        if not links:
            raise ApiError(Unavailable("no router reachable"))
        replies = []
        for link in links:
            try:
                replies.append(_public((await link.request({"op": SERVICE_STATS})).header))
            except TileRouterError:
                continue  # went away meanwhile: the others still answer
        if not replies:
            raise ApiError(Unavailable("no router answered"))
        stats = dict(replies[0])
        if len(self.gateway.client.links) > 1:
            stats["routers"] = replies
        stats["gateway"] = self.gateway.stats()
        self.write_json(stats)


class HealthHandler(RelayHandler):
    def prepare(self) -> None:  # health checks need no token
        pass

    def get(self) -> None:
        self.write_json({"ok": True, "router_available": self.gateway.client.available})


READY_TIMEOUT = 2.0  # seconds /readyz waits for the router's answer


class ReadyHandler(RelayHandler):
    """``/readyz``: 200 when a router answers and has at least one worker, else 503.
    (``/healthz`` says the process is alive; this says it can serve a tile.)"""

    def prepare(self) -> None:  # probes need no token
        pass

    async def get(self) -> None:
        try:
            reply = await self.gateway.client.request({"op": SERVICE_READY},
                                                      timeout=READY_TIMEOUT)
            body = {"ready": bool(reply.header.get("ready")),
                    "workers": reply.header.get("workers", 0)}
        except TileRouterError as exc:
            body = {"ready": False, "workers": 0, "error": exc.to_wire()}
        self.set_status(200 if body["ready"] else 503)
        self.write_json(body)


class MetricsHandler(RelayHandler):
    """``/metrics`` in the Prometheus text format (``wsgateway.metrics``); behind the
    same authentication as every route but the probes."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.gateway.exporter.render())


def authenticate(handler: RequestHandler, gateway: Gateway) -> Grant:
    """The caller's grant from header, query or cookie; 401 JSON error when refused."""
    try:
        return gateway.auth.grant_for(handler.request.headers,
                                      handler.get_query_argument("token", None),
                                      handler.get_cookie(COOKIE))
    except TileRouterError as exc:
        gateway.reject(exc)
        raise ApiError(exc) from None


def _num(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(BadRequest(f"{text[:20]!r} is not an integer")) from None
