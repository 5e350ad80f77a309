"""``GET /ws``: the public websocket protocol (README), relayed to the router.

Lifecycle: ``open`` -> many concurrent ``on_message`` relays (bounded per
connection) -> ``on_close`` (pending replies are then discarded safely).
Each relay holds its in-flight slot until the reply is written, so a slow
reader gets ``busy`` instead of growing the gateway's buffers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from config.errors import (
    BadRequest,
    Busy,
    MessageTooLarge,
    RateLimited,
    TileRouterError,
)
from config.logs import REQUEST_ID, new_request_id, request_id_from
from wsgateway.auth import OPEN
from wsgateway.http import ApiError, authenticate
from wsgateway.ratelimit import TokenBucket
from wsgateway.relay import Reply
from wsgateway.requests import check_client_id
from wsgateway.wire import binary_frame, error_body

if TYPE_CHECKING:
    from wsgateway.gateway import Gateway

log = logging.getLogger(__name__)

# a connection whose unread replies exceed max_inflight_per_connection x this meets busy
BACKLOG_BYTES_PER_REQUEST = 64 * 1024

# sent once to every websocket when the gateway hands off; distinct from any reply (no
# "ok", id null): open a new connection now, this one still answers what it is sent
RECONNECT_NOTICE = json.dumps({"id": None, "notice": "reconnect",
                               "message": "gateway shutting down: open a new connection"})


class TileSocketHandler(WebSocketHandler):
    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.inflight = 0  # relayed requests not yet answered
        self.grant = OPEN
        self._unflushed = 0  # bytes written and not yet flushed to the client
        self._relays: set[asyncio.Task[None]] = set()
        self.last_message_at = time.monotonic()  # or of the hand-off notice, if later
        rate = gateway.settings.max_requests_per_second
        self._bucket = TokenBucket(rate, burst=max(rate, 1.0)) if rate else None

    def prepare(self) -> None:
        """Runs before the upgrade: an unauthenticated upgrade is refused with 401."""
        self.grant = authenticate(self, self.gateway)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.error.message if isinstance(exc, ApiError) else self._reason
        self.finish(message)

    def check_origin(self, origin: str) -> bool:
        allowed = self.gateway.allowed_origins
        if allowed and (origin in allowed or "*" in allowed):
            return True
        # same origin only: the Origin's host:port must be the Host we were reached on
        return urlparse(origin).netloc.lower() == self.request.host.lower()

    def open(self) -> None:
        self.gateway.connections += 1
        self.gateway.sockets.add(self)
        log.debug("websocket open from %s", self.request.remote_ip)
        if self.gateway.draining:  # upgraded while the gateway hands off: move on at once
            self.notify_draining()

    def on_close(self) -> None:
        self.gateway.connections -= 1
        self.gateway.sockets.discard(self)
        log.debug("websocket closed; %d relays still pending", len(self._relays))

    def on_message(self, message: str | bytes) -> None:
        self.last_message_at = time.monotonic()
        rid: Any = None
        request_id: str | None = None  # the client's (optional field), else one made here
        try:
            if isinstance(message, bytes):
                raise BadRequest("send requests as text JSON messages")
            if len(message) > self.gateway.settings.max_message_bytes:
                raise MessageTooLarge(
                    f"message over {self.gateway.settings.max_message_bytes} bytes")
            try:
                obj = json.loads(message)
            except (ValueError, RecursionError):
                raise BadRequest("message is not valid JSON (or nested too deeply)") from None
            if isinstance(obj, dict):
                rid = check_client_id(obj)
                request_id = request_id_from(obj.get("request_id"))
            request = self.gateway.accept(obj, self.grant)
            if self._bucket is not None and not self._bucket.take():
                raise RateLimited(f"over {self.gateway.settings.max_requests_per_second:g} "
                                  "requests per second on this connection")
            limit = self.gateway.settings.max_inflight_per_connection
            if self.inflight >= limit:
                raise Busy(f"more than {limit} requests in flight on this connection")
            if self._backlog() > limit * BACKLOG_BYTES_PER_REQUEST:
                raise Busy("replies are waiting for this connection to read them")
        except TileRouterError as exc:
            self.gateway.counters["rejected"] += 1
            self.gateway.reject(exc)
            self._send_now(error_body(rid, exc.code, exc.message,
                                      request_id or new_request_id()))
            return
        reply = self.gateway.answer_now(request)
        if reply is not None and reply.payload is not None:
            self._write_now(rid, reply)
            return
        self.inflight += 1
        self.gateway.relaying += 1
        token = REQUEST_ID.set(request_id or new_request_id())  # the relay task copies it
        try:
            self._spawn(self._relay(rid, request, looked_up=reply is None))
        finally:
            REQUEST_ID.reset(token)

    def _write_now(self, rid: Any, reply: Reply) -> None:
        """A stored or hot tile, answered in this callback (no task, no await).

        Flow control is by the bytes still waiting in the socket's write buffer, checked
        before each request: a reader that falls behind meets ``busy``. (Counting each
        write until its future's callback ran was wrong: Tornado's frame loop reads a
        fast client's next messages before those callbacks get a turn.)
        """
        self.gateway.counters["requests"] += 1
        try:
            self._write(binary_frame(_client_header(rid, reply), reply.payload), binary=True)
        except WebSocketClosedError:
            self.gateway.counters["discarded"] += 1

    def _backlog(self) -> int:
        """Bytes handed to ``write_message`` whose futures have not resolved: what the
        client has not taken yet (an upper bound: a future's callback may run a little
        after its bytes left)."""
        return self._unflushed

    def _write(self, message: str | bytes, binary: bool = False) -> asyncio.Future[None]:
        """``write_message``, counting its bytes in ``_backlog`` until they are flushed."""
        size = len(message)
        future = self.write_message(message, binary=binary)
        self._unflushed += size

        def flushed(fut: asyncio.Future[None]) -> None:
            self._unflushed -= size
            _retrieve(fut)

        future.add_done_callback(flushed)
        return future

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _relay(self, rid: Any, request: dict[str, Any], looked_up: bool = False
                     ) -> None:
        try:
            try:
                reply = await self.gateway.request(request, self.grant, looked_up)
            except TileRouterError as exc:
                await self._send(error_body(rid, exc.code, exc.message, REQUEST_ID.get()),
                                 binary=False)
                return
            except Exception as exc:  # a bug must still answer the request
                log.exception("relaying %r failed", request)
                await self._send(error_body(rid, "internal", str(exc), REQUEST_ID.get()),
                                 binary=False)
                return
            header = _client_header(rid, reply)
            if isinstance(header.get("error"), dict):  # the id this gateway gave it
                header["error"] = {**header["error"], "request_id": REQUEST_ID.get()}
            if reply.payload is not None:
                await self._send(binary_frame(header, reply.payload), binary=True)
            else:
                await self._send(json.dumps(header), binary=False)
        finally:
            self.inflight -= 1
            self.gateway.relaying -= 1

    def notify_draining(self) -> None:
        """The hand-off notice (README "Websocket protocol"): not an error, no request
        failed; the client opens a new connection, which lands on a sibling gateway."""
        self.last_message_at = time.monotonic()
        self._send_now(RECONNECT_NOTICE)

    def quiet_for(self) -> float:
        """Seconds this socket has had nothing in flight and sent nothing (0 while busy):
        after the notice, a quiet client has moved, or does not know the notice."""
        if self.inflight or self._unflushed:
            return 0.0
        return time.monotonic() - self.last_message_at

    def closing(self) -> bool:
        """Closed, or its close frame sent (the client's echo may take a while)."""
        return self.ws_connection is None or self.ws_connection.is_closing()

    def _send_now(self, message: str) -> None:
        """Queue a reply at once, so it goes out before any close frame sent after it."""
        try:
            self._write(message)
        except WebSocketClosedError:
            self.gateway.counters["discarded"] += 1

    async def _send(self, message: str | bytes, binary: bool) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            self.gateway.counters["discarded"] += 1
            return
        try:
            await self._write(message, binary=binary)
        except WebSocketClosedError:
            self.gateway.counters["discarded"] += 1


def _client_header(rid: Any, reply: Reply) -> dict[str, Any]:
    """A reply's header as the client sees it: its own id, not the router's ``rid`` (of
    whichever request filled the hot cache, for a hot tile)."""
    header = {"id": rid, **reply.header}
    header.pop("rid", None)
    return header


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # a write to a closed connection is expected; don't log it
