"""Worker process: a DEALER to the router, heartbeats, reconnect with backoff.

Paranoid-Pirate style: the worker registers with its open slides, heartbeats,
and if the router goes silent for ``liveness x interval`` it reconnects (backoff
doubling up to 32 intervals) and registers again with its current open readers,
so a restarted router rebuilds its map without anything being reopened.

Requests are rendered on the thread that owns the socket (handing each to a render
thread and back cost 0.17 ms of CPU per tile, 10% of the worker's throughput). So
that a slow open or a large render never silences the heartbeats (the router would
otherwise declare a busy worker dead), a small heartbeat thread may use the socket,
but only while the main thread is rendering: ``_sock_lock`` is held by the main
thread at all other times, which also gives ZeroMQ the memory barrier it asks for
when a socket moves between threads.
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

from config.errors import ProtocolError
from config.settings import Settings
from router import protocol
from router.curve import secure_client
from workers.handler import RequestHandler

log = logging.getLogger(__name__)

MAX_BACKOFF_FACTOR = 32
# on stop, messages already delivered that are still handled (requests among them are at
# most worker_capacity; the router re-sends anything else once it reads our DISCONNECT)
FINAL_DRAIN_MESSAGES = 64
# Fault injection for tests only: a slide that crashes OpenSlide hard cannot be made on
# demand, so this env var makes the worker die (os._exit) on requests for one slide.
_CRASH_SLIDE = os.environ.get("TILEROUTER_TEST_CRASH_SLIDE")


class Worker:
    """One worker; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.identity = f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".encode()
        self.context = context or zmq.Context.instance()
        self.handler = RequestHandler(settings)
        self.stop = threading.Event()
        self.served = 0
        self.errors = 0
        self._slides: tuple[str, ...] = ()
        self._sock: zmq.Socket | None = None
        self._sock_lock = threading.Lock()  # see the module docstring
        self._finished = threading.Event()  # ends the heartbeat thread
        self._router_expiry = 0.0
        self._next_heartbeat = 0.0
        self._backoff = settings.heartbeat_interval

    # --- state reported to the router ---------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "capacity": self.settings.worker_capacity,
            **self._progress(),
        }

    def _progress(self) -> dict[str, Any]:
        tiles, decoded = self.handler.tiles, self.handler.decoded
        progress = {"slides": list(self._slides), "served": self.served,
                    "opens": self.handler.readers.opens,
                    "cache": {"hits": tiles.hits, "misses": tiles.misses}}
        if decoded is not None:
            progress["decoded"] = {"hits": decoded.hits, "misses": decoded.misses}
        remote = self.handler.factory.mounts.stats()
        if remote:
            progress["remote"] = remote
        metrics = self.handler.metrics_report()  # throttled: see handler.METRICS_EVERY
        if metrics is not None:
            progress["m"] = metrics
        return progress

    # --- socket lifecycle (main thread, holding _sock_lock) -------------------------------

    def _connect(self) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        secure_client(sock, self.settings)
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
        if self._sock is None:
            return
        try:  # never block: with no usable router connection a DEALER send would hang
            protocol.send_nowait(self._sock, protocol.encode(command, header, payload))
        except zmq.Again:
            log.debug("router not reachable; %s dropped", protocol.COMMANDS.get(command))
        self._next_heartbeat = time.monotonic() + self.settings.heartbeat_interval

    # --- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        self._sock_lock.acquire()
        beater = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._connect()
        beater.start()
        poll_ms = max(1, min(int(self.settings.heartbeat_interval * 1000), 250))
        try:
            while not self.stop.is_set():
                if self._sock is not None and self._sock.poll(poll_ms):
                    self._drain_router()
                elif self._sock is None:
                    self.stop.wait(poll_ms / 1000)
                now = time.monotonic()
                if now >= self._router_expiry:
                    self._reconnect()
                elif now >= self._next_heartbeat:
                    self._send(protocol.HEARTBEAT, self.state())
        finally:
            # what the router already sent us is answered before we leave (the router
            # retries anything else elsewhere once it reads our DISCONNECT)
            with contextlib.suppress(zmq.ZMQError):
                self._drain_router(limit=FINAL_DRAIN_MESSAGES)
            with contextlib.suppress(zmq.ZMQError):
                self._send(protocol.DISCONNECT, {})
            if self._sock is not None:  # linger a little: a dropped DISCONNECT reads as a crash
                self._sock.close(linger=int(1000 * min(1.0, self.settings.heartbeat_interval)))
                self._sock = None
            self._finished.set()
            self._sock_lock.release()
            beater.join(timeout=5)
            self.handler.close()
            log.info("worker %s stopped: served=%d errors=%d opens=%d",
                     self.identity.decode(), self.served, self.errors,
                     self.handler.readers.opens)

    def _heartbeat_loop(self) -> None:
        """Heartbeats while the main thread renders. It holds the lock at all other times,
        and heartbeats itself then; never blocking on the lock keeps this thread from
        waking at every render."""
        interval = self.settings.heartbeat_interval
        while not self._finished.wait(interval / 4):
            if not self._sock_lock.acquire(blocking=False):
                continue
            try:
                if self._sock is not None and time.monotonic() >= self._next_heartbeat:
                    with contextlib.suppress(zmq.ZMQError):
                        self._send(protocol.HEARTBEAT, self.state())
            finally:
                self._sock_lock.release()

    def _reconnect(self) -> None:
        log.warning("router silent; reconnecting in %.2fs", self._backoff)
        self._disconnect()
        if self.stop.wait(self._backoff):
            return
        self._backoff = min(self._backoff * 2,
                            self.settings.heartbeat_interval * MAX_BACKOFF_FACTOR)
        self._connect()

    def _drain_router(self, limit: int | None = None) -> None:
        """Handle what the router has sent. Under steady load the next request is always
        waiting, so this stops once ``stop`` is set (or after ``limit`` messages)."""
        handled = 0
        while self._sock is not None and (handled < limit if limit is not None
                                          else not self.stop.is_set()):
            handled += 1
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._on_message(frames)

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

    def _serve(self, request: dict[str, Any]) -> None:
        if _CRASH_SLIDE and request.get("slide") == _CRASH_SLIDE:
            os._exit(70)  # simulated native crash (see _CRASH_SLIDE)
        self._sock_lock.release()  # the heartbeat thread may speak while we render
        try:
            reply, payload = self.handler.safe_handle(request)
        finally:
            self._sock_lock.acquire()
        self.served += 1
        if not reply.get("ok"):
            self.errors += 1
        self._slides = tuple(self.handler.readers.slides())
        self._send(protocol.REPLY, {"tid": request.get("tid"), "r": reply, **self._progress()},
                   payload)
