"""Worker process loop: a DEALER to the router, heartbeats, reconnect with backoff.

Paranoid-Pirate style: the worker registers with its open slides, answers requests
one at a time, heartbeats while idle, and if the router goes silent for
``liveness x interval`` it reconnects (backoff doubling to 32x) and registers
again with its current open readers, so a restarted router rebuilds its map.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import zmq

from config.settings import Settings
from router import protocol
from router.errors import ProtocolError
from workers.handler import RequestHandler

log = logging.getLogger(__name__)

MAX_BACKOFF_FACTOR = 32


class Worker:
    """One single-threaded worker; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.identity = f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".encode()
        self.context = context or zmq.Context.instance()
        self.handler = RequestHandler(settings)
        self.stop = threading.Event()
        self.served = 0
        self.errors = 0
        self._sock: zmq.Socket | None = None
        self._router_expiry = 0.0
        self._next_heartbeat = 0.0
        self._backoff = settings.heartbeat_interval

    # --- state reported to the router ---------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "capacity": self.settings.worker_capacity,
            "slides": self.handler.readers.slides(),
            "served": self.served,
            "cache": {"hits": self.handler.tiles.hits, "misses": self.handler.tiles.misses},
        }

    # --- socket lifecycle -----------------------------------------------------------------

    def _connect(self) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.settings.backend)
        self._sock = sock
        self._send(protocol.REGISTER, self.state())
        self._router_expiry = time.monotonic() + self.settings.heartbeat_expiry
        log.info("worker %s connected to %s", self.identity.decode(), self.settings.backend)

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _send(self, command: bytes, header: dict[str, Any], payload: bytes | None = None) -> None:
        assert self._sock is not None
        self._sock.send_multipart(protocol.encode(command, header, payload), copy=False)
        self._next_heartbeat = time.monotonic() + self.settings.heartbeat_interval

    # --- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        self._connect()
        interval_ms = max(1, int(self.settings.heartbeat_interval * 1000))
        try:
            while not self.stop.is_set():
                assert self._sock is not None
                if self._sock.poll(min(interval_ms, 250), zmq.POLLIN):
                    self._on_message(self._sock.recv_multipart(copy=False))
                now = time.monotonic()
                if now >= self._router_expiry:
                    self._reconnect()
                elif now >= self._next_heartbeat:
                    self._send(protocol.HEARTBEAT, self.state())
        finally:
            if self._sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._send(protocol.DISCONNECT, {})
            self._disconnect()
            self.handler.close()
            log.info("worker %s stopped: served=%d errors=%d opens=%d",
                     self.identity.decode(), self.served, self.errors,
                     self.handler.readers.opens)

    def _reconnect(self) -> None:
        log.warning("router silent; reconnecting in %.2fs", self._backoff)
        self._disconnect()
        if self.stop.wait(self._backoff):
            return
        self._backoff = min(self._backoff * 2,
                            self.settings.heartbeat_interval * MAX_BACKOFF_FACTOR)
        self._connect()

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = protocol.parse(frames)
        except ProtocolError as exc:
            log.warning("dropping malformed message from router: %s", exc)
            return
        self._router_expiry = time.monotonic() + self.settings.heartbeat_expiry
        self._backoff = self.settings.heartbeat_interval
        if msg.command == protocol.REQUEST:
            self._serve(msg.header)
        elif msg.command == protocol.DISCONNECT:
            log.info("router asked us to reconnect")
            self._disconnect()
            self._connect()

    def _serve(self, header: dict[str, Any]) -> None:
        tid = header.get("tid")
        reply, payload = self.handler.safe_handle(header)
        self.served += 1
        if not reply.get("ok"):
            self.errors += 1
        state = {
            "tid": tid,
            "r": reply,
            "slides": self.handler.readers.slides(),
            "served": self.served,
            "cache": {"hits": self.handler.tiles.hits, "misses": self.handler.tiles.misses},
        }
        self._send(protocol.REPLY, state, payload)
