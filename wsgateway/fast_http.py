"""A lean HTTP path for DeepZoom tile GETs, in front of the Tornado application.

A tile GET is the one HTTP request a viewer makes thousands of times; Tornado's
``RequestHandler`` machinery (handler object, header bookkeeping, flush/finish,
logging) cost more CPU than everything else the gateway does for a hot tile. This
delegate answers ``GET /dz/<slide>_files/<level>/<col>_<row>.<fmt>`` itself, straight
on the HTTP/1.1 connection, with the same checks and JSON error bodies as the
application's handlers: it is the only tile path over HTTP. Every other request goes
to the application unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from tornado import httputil
from tornado.iostream import StreamClosedError

from config.errors import BadRequest, TileRouterError, error_from_wire
from config.logs import REQUEST_ID, new_request_id, request_id_from
from router.protocol import payload_bytes
from wsgateway.auth import COOKIE, Grant
from wsgateway.relay import Reply
from wsgateway.wire import http_error_body, http_status

if TYPE_CHECKING:
    from tornado.web import Application

    from wsgateway.gateway import Gateway

log = logging.getLogger(__name__)

TILE_PATH = re.compile(r"/dz/(.+?)_files/(\d+)/(\d+)_(\d+)\.(jpeg|jpg|png)")
_OK = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")


class FastTiles(httputil.HTTPServerConnectionDelegate):
    """The server's delegate: tile GETs answered here, the rest by ``app``."""

    def __init__(self, app: Application, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self._date = ""
        self._date_at = -1

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection
                      ) -> httputil.HTTPMessageDelegate:
        return _Dispatch(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)

    def date(self) -> str:
        """The Date header, formatted once a second."""
        now = int(time.time())
        if now != self._date_at:
            self._date, self._date_at = formatdate(now, usegmt=True), now
        return self._date


class _Dispatch(httputil.HTTPMessageDelegate):
    """One request: served here when it is a plain tile GET, else passed to the app."""

    def __init__(self, owner: FastTiles, server_conn: object,
                 request_conn: httputil.HTTPConnection) -> None:
        self.owner = owner
        self.server_conn = server_conn
        self.conn = request_conn
        self.delegate: httputil.HTTPMessageDelegate | None = None
        self.tile: tuple[str, re.Match[str], httputil.HTTPHeaders] | None = None
        self.method = "GET"

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Any:
        assert isinstance(start_line, httputil.RequestStartLine)
        path, _, query = start_line.path.partition("?")
        match = TILE_PATH.fullmatch(path)
        if match is not None:
            self.tile = (query, match, headers)
            self.method = start_line.method
            return None
        self.delegate = self.owner.app.start_request(self.server_conn, self.conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        if self.delegate is not None:
            return self.delegate.data_received(chunk)
        return None  # a body on a tile GET is ignored, as Tornado would

    def finish(self) -> None:
        if self.delegate is not None:
            self.delegate.finish()
            return
        assert self.tile is not None
        query, match, headers = self.tile
        if self.method != "GET":
            body = http_error_body("http", "Method Not Allowed").encode()
            self._write(405, "application/json", "no-store",
                        b"" if self.method == "HEAD" else body)  # HEAD: headers only
            return
        gateway = self.owner.gateway
        request_id = request_id_from(headers.get("X-Request-Id"))
        try:
            grant = _authenticate(gateway, query, headers)
            request = gateway.accept(_tile_request(match), grant)
        except TileRouterError as exc:
            gateway.reject(exc)
            self._error(exc, request_id or new_request_id())
            return
        reply = gateway.answer_now(request)  # stored or hot: answered without a task
        if reply is not None:
            gateway.counters["requests"] += 1
            self._image(reply)
            return
        token = REQUEST_ID.set(request_id or new_request_id())  # the task copies it
        try:
            asyncio.ensure_future(self._relay(request, grant))
        finally:
            REQUEST_ID.reset(token)

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()

    async def _relay(self, request: dict[str, Any], grant: Grant) -> None:
        try:
            reply = await self.owner.gateway.request(request, grant, looked_up=True)
            if not reply.header.get("ok"):
                raise error_from_wire(reply.header.get("error") or {})
        except TileRouterError as exc:
            self._error(exc)
            return
        except Exception:  # a bug costs this request a 500, never the connection's silence
            log.exception("tile request %r failed", request)
            self._error(TileRouterError("internal error"))
            return
        self._image(reply)

    def _image(self, reply: Reply) -> None:
        body = payload_bytes(reply.payload)
        self._write(200, reply.header.get("mime", "application/octet-stream"),
                    "public, max-age=3600", body)

    def _error(self, exc: TileRouterError, request_id: str | None = None) -> None:
        request_id = request_id or REQUEST_ID.get()
        body = http_error_body(exc.code, exc.message, request_id)
        self._write(http_status(exc.code), "application/json", "no-store", body.encode(),
                    request_id)

    def _write(self, status: int, mime: str, cache: str, body: bytes,
               request_id: str | None = None) -> None:
        start = _OK if status == 200 else httputil.ResponseStartLine(
            "HTTP/1.1", status, httputil.responses.get(status, "Unknown"))
        headers = httputil.HTTPHeaders()
        headers["Content-Type"] = mime
        headers["Content-Length"] = str(len(body))
        headers["Cache-Control"] = cache
        headers["Access-Control-Allow-Origin"] = "*"
        headers["Date"] = self.owner.date()
        headers["Server"] = "tilerouter"
        if request_id:
            headers["X-Request-Id"] = request_id
        try:
            _quiet(self.conn.write_headers(start, headers, body))
            self.conn.finish()
        except StreamClosedError:  # the client left; nothing to answer
            pass


def _quiet(future: Any) -> None:
    """A write to a connection the client closed fails its future: that is not news."""
    if future is not None:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())


def _tile_request(match: re.Match[str]) -> dict[str, Any]:
    """The tile request a matched path asks for; BadRequest for a slide id that is not
    UTF-8 or a number too long for ``int``."""
    try:
        slide = unquote(match.group(1), errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("slide id is not valid UTF-8") from None
    try:
        level, col, row = int(match.group(2)), int(match.group(3)), int(match.group(4))
    except ValueError:
        raise BadRequest("tile level, column or row is not a usable integer") from None
    fmt = match.group(5)
    return {"op": "tile", "slide": slide, "level": level, "col": col, "row": row,
            "format": "jpeg" if fmt in ("jpg", "jpeg") else fmt}


def _authenticate(gateway: Gateway, query: str, headers: httputil.HTTPHeaders) -> Grant:
    """As ``http.authenticate``: a token from the header, the query or the cookie."""
    if not gateway.auth.enabled:
        return gateway.auth.grant_for(headers, None, None)
    try:
        tokens = parse_qs(query, keep_blank_values=True).get("token") if query else None
        cookie = httputil.parse_cookie(headers.get("Cookie", "")).get(COOKIE)
    except Exception:
        raise BadRequest("unreadable credentials") from None
    return gateway.auth.grant_for(headers, tokens[-1].strip() if tokens else None, cookie)
