"""The gateway's one async DEALER to the router: request/reply matching and liveness.

Lazy-Pirate style: the gateway heartbeats the router; when the router has been
silent for ``liveness x interval`` every pending request fails with
``unavailable``, the socket is rebuilt (dropping queued messages), and new
requests fail fast until the router answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from config.settings import Settings
from router import protocol
from router.curve import secure_client
from router.errors import Busy, ProtocolError, TileRouterError, Timeout, Unavailable

log = logging.getLogger(__name__)

MAX_PENDING = 20_000


@dataclass(frozen=True, slots=True)
class Reply:
    header: dict[str, Any]
    payload: protocol.Payload | None


class RouterClient:
    def __init__(self, settings: Settings, context: zmq.asyncio.Context | None = None) -> None:
        self.settings = settings
        self.context = context or zmq.asyncio.Context.instance()
        self.available = True
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._rids = itertools.count(1)
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_heard = time.monotonic()
        self.reconnects = 0

    async def start(self) -> None:
        self._connect()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="router-heartbeat")]

    def _connect(self) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, MAX_PENDING)
        sock.setsockopt(zmq.RCVHWM, MAX_PENDING)
        secure_client(sock, self.settings)
        sock.connect(self.settings.frontend)
        self._sock = sock
        self._last_heard = time.monotonic()
        self._tasks.append(asyncio.create_task(self._read_loop(sock), name="router-reader"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_all(Unavailable("gateway shutting down"))
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self.available = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, request: dict[str, Any], timeout: float | None = None) -> Reply:
        """Send one request; resolve with the reply, or raise a TileRouterError."""
        if not self.available:
            raise Unavailable("router unavailable; retrying the connection")
        if len(self._pending) >= MAX_PENDING:
            raise Busy("gateway has too many requests in flight")
        timeout = timeout or self.settings.request_timeout
        rid = next(self._rids)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        header = {**request, "rid": rid, "timeout": timeout}
        try:
            if self._sock is None:
                raise Unavailable("router connection closed")
            try:  # never await a send: with no router peer a DEALER send waits forever
                await self._sock.send_multipart(protocol.encode(protocol.REQUEST, header),
                                                flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise Unavailable("router not reachable") from None
            # the router answers timeouts itself; this backstop covers a lost router
            return await asyncio.wait_for(fut, timeout + self.settings.heartbeat_expiry + 1)
        except TimeoutError:
            raise Timeout("no reply from the router in time") from None
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart(copy=False)
            except (asyncio.CancelledError, zmq.ZMQError):
                return
            self._last_heard = time.monotonic()
            if not self.available:
                log.info("router is back")
                self.available = True
            try:
                msg = protocol.parse(frames)
            except ProtocolError as exc:
                log.warning("malformed message from router: %s", exc)
                continue
            if msg.command != protocol.REPLY:
                continue
            fut = self._pending.get(msg.header.get("rid"))  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                fut.set_result(Reply(msg.header, msg.payload))

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    await sock.send_multipart(protocol.encode(protocol.HEARTBEAT, {}),
                                              flags=zmq.NOBLOCK)
            silent = time.monotonic() - self._last_heard
            if silent > self.settings.heartbeat_expiry and self.available:
                log.warning("router silent for %.1fs: failing %d requests, reconnecting",
                            silent, len(self._pending))
                self.available = False
                self._fail_all(Unavailable("router unavailable"))
                self._rebuild()

    def _rebuild(self) -> None:
        """New socket: drops whatever was queued for the dead router."""
        if self._sock is not None:
            self._sock.close(linger=0)
        self._tasks = [t for t in self._tasks if not t.done()]
        self.reconnects += 1
        self._connect()

    def _fail_all(self, exc: TileRouterError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
